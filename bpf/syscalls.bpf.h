/* SPDX-License-Identifier: MIT */
/* Syscall numbers the shim dispatches on, per architecture. */
#ifndef CW_SYSCALLS_BPF_H
#define CW_SYSCALLS_BPF_H

#if defined(__TARGET_ARCH_x86)
#define CW_NR_read 0
#define CW_NR_write 1
#define CW_NR_readv 19
#define CW_NR_writev 20
#define CW_NR_sendfile 40
#define CW_NR_accept 43
#define CW_NR_accept4 288
#define CW_NR_sendto 44
#define CW_NR_recvfrom 45
#define CW_NR_sendmsg 46
#define CW_NR_recvmsg 47
#define CW_NR_recvmmsg 299
#define CW_NR_sendmmsg 307
#define CW_NR_splice 275
#define CW_NR_tee 276
#define CW_NR_vmsplice 278
#define CW_NR_preadv2 327
#define CW_NR_pwritev2 328
/* Syscall arguments as the user passed them (x86_64 ABI). */
#define CW_ARG1(r) ((r)->di)
#define CW_ARG2(r) ((r)->si)
#define CW_ARG3(r) ((r)->dx)
#define CW_ARG4(r) ((r)->r10)
#else
#error "causeway: syscall numbers are defined for x86_64 only (build with -D__TARGET_ARCH_x86)"
#endif

/* Syscalls that read from their first argument: handled at exit only. */
static __always_inline bool read_syscall(long id)
{
	switch (id) {
	case CW_NR_read:
	case CW_NR_readv:
	case CW_NR_preadv2:
	case CW_NR_recvfrom:
	case CW_NR_recvmsg:
	case CW_NR_recvmmsg:
		return true;
	default:
		return false;
	}
}

/* Syscalls that write (or, for vmsplice, may read): prepared at enter. */
static __always_inline bool write_syscall(long id)
{
	switch (id) {
	case CW_NR_write:
	case CW_NR_writev:
	case CW_NR_pwritev2:
	case CW_NR_vmsplice:
	case CW_NR_sendfile:
	case CW_NR_sendto:
	case CW_NR_sendmsg:
	case CW_NR_sendmmsg:
	case CW_NR_splice:
	case CW_NR_tee:
		return true;
	default:
		return false;
	}
}

#endif /* CW_SYSCALLS_BPF_H */
