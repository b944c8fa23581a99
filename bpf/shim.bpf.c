// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The kernel shim: carries a struct cw_record with the bytes that tracked
 * threads exchange through pipes, FIFOs, UNIX sockets and TCP, and across
 * fork and exec.
 *
 * Hot path: every syscall of every task on the machine runs handle_enter and
 * handle_exit. Both return after the syscall-number switch unless the
 * syscall can move bytes; then a task that is not tracked returns after one
 * load of its task-storage pointer. A task is tracked when it holds a record:
 * the root gets one from user space, and fork gives one to the children of
 * tracked tasks inside the run's cgroup. TCP sends and socket receives also
 * run handle_tcp_send and handle_sock_recv, which are handed the socket and
 * return at the same check.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "causeway.h"
#include "syscalls.bpf.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Set through the skeleton's rodata before load. */
const volatile __u64 cw_wakeup_bytes = 65536;	/* wake the reader past this backlog (set at load: a quarter of the ring) */
const volatile bool cw_emit_events = true;	/* false: propagate only, no ring buffer */
const volatile __u8 cw_opt_kind = 253;		/* TCP option kind (RFC 6994 experimental) */
const volatile __u16 cw_opt_exid = 0xc5a7;	/* its ExID */
/* true (causeway attach --pid): children of followed threads are followed wherever they live; false: only inside run_cgroup. */
const volatile bool cw_follow_tracked = false;
const volatile __u64 cw_boot_to_epoch_ns = 0;	/* CLOCK_REALTIME - CLOCK_BOOTTIME at load: new trace ids begin with the time */

/*
 * scripts/hot-path-steps.sh builds the shim with CW_PROFILE_STOP=N to measure
 * what each step of a write and a read costs, over pipes and UNIX sockets
 * (sys_enter, sys_exit) and TCP (sys_enter, tcp_sendmsg_locked, sys_exit,
 * sock_recv_length, sockops): they return after step N. Every real build has
 * 0, and the compiler drops the checks.
 *   1 the syscall number   2 the thread's task storage
 *   3 the fd table          4 the channel: its entry in chans, or the TCP socket's storage
 * (the TCP hooks have no syscall number or fd table: they return at once at 1,
 * after the task storage at 2 and 3; sockops returns at once at every step:
 * the option path is part of the rest.)
 */
#ifndef CW_PROFILE_STOP
#define CW_PROFILE_STOP 0
#endif
#define PROFILE_STOP(n, ...)                          \
	do {                                          \
		if (CW_PROFILE_STOP == (n))           \
			return __VA_ARGS__;           \
	} while (0)

/*
 * The run's cgroup, by file descriptor: the kernel compares cgroups, not ids
 * and depths that a cgroup namespace or mount would shift.
 */
struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} run_cgroup SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct cw_task);
} tasks SEC(".maps");

/*
 * Pipes, FIFOs and UNIX sockets, by inode. Not an LRU map: a full table is
 * counted (CW_C_CHAN_FULL), never an eviction of a live channel; user space
 * deletes the channels of objects that no process of the run holds.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 16384);
	__type(key, struct cw_chan_key);
	__type(value, struct cw_chan);
} chans SEC(".maps");

/* TCP: what a socket's writers published (sender side), freed with the socket. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct cw_chan);
} sk_out SEC(".maps");

/* TCP: what the peer's options announced (receiver side), freed with the socket. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct cw_chan);
} sk_in SEC(".maps");

/*
 * The actor areas of records sent over TCP, by event id: the option has no
 * room for them, so on one host a receiver of the same run takes them from
 * here. Keys are random ids, never reused; an LRU loses only old areas, and
 * a receiver that misses one counts it.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u8[CW_ACTOR_BYTES]);
} actor_areas SEC(".maps");

/* One zeroed channel: the initial value of a new entry (too big for the stack). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cw_chan);
} chan_zero SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CW_C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Event ids: a counter per CPU from a random start, mixed (events.bpf.h new_id). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} id_gen SEC(".maps");

/* Networks whose records are accepted and towards which records are written. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 256);
	__type(key, struct cw_lpm_key);
	__type(value, __u8);
} trusted_nets SEC(".maps");

/* Kernel-side policy set by actors: one entry. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cw_policy);
} policy SEC(".maps");

/* Local TCP ports where bytes with no record get a new one (minting on ingress). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u16);
	__type(value, struct cw_mint);
} ingress_ports SEC(".maps");

/* Remote TCP ports towards which records are stripped (no option written). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u16);
	__type(value, __u8);
} egress_strip SEC(".maps");

/* The SDK: per process (tgid), an mmap-able array of thread slots that only that process maps. */
struct sdk_slots {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, CW_SDK_SLOTS);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct cw_sdk_slot));
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__array(values, struct sdk_slots);
} sdk_procs SEC(".maps");

/* The scheduler's feed: priority changes, forks and exits of the threads it reniced (lib/sched.bpf.h). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 16);
} sched_rb SEC(".maps");

/* The scheduler's socket priorities by record priority: 0 = leave, else 1 + SO_PRIORITY. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, CW_SCHED_PRIOS);
	__type(key, __u32);
	__type(value, __u32);
} sched_skprio SEC(".maps");

#include "lib/events.bpf.h"
#include "lib/sched.bpf.h"
#include "lib/sdk.bpf.h"
#include "lib/fd.bpf.h"
#include "lib/chan.bpf.h"
#include "lib/tcpopt.bpf.h"

#define MSG_PEEK 2

static __always_inline bool in_scope(void)
{
	if (cw_follow_tracked)
		return true;	/* the caller checks that the parent is followed */
	return bpf_current_task_under_cgroup(&run_cgroup, 0) == 1;
}

static __always_inline struct cw_task *task_state_of(struct task_struct *task)
{
	/* Most tasks hold no task storage of any map: skip the lookup. */
	if (!task->bpf_storage)
		return NULL;
	return bpf_task_storage_get(&tasks, task, 0, 0);
}

static __always_inline struct cw_task *task_state(void)
{
	return task_state_of(bpf_get_current_task_btf());
}

static __always_inline bool is_pipe(__u32 kind)
{
	return kind == CW_CHAN_PIPE || kind == CW_CHAN_FIFO;
}

/* splice(in, off, out, off, len, flags) and tee(in, out, len, flags), between pipes. */
static __always_inline void splice_enter(struct task_struct *task, struct cw_task *t, struct pt_regs *regs, long id)
{
	struct cw_io in = {}, out = {};
	bool has_in = is_pipe(fd_resolve(task, CW_ARG1(regs), false, &in));
	__u32 okind = fd_resolve(task, id == CW_NR_tee ? CW_ARG2(regs) : CW_ARG3(regs), true, &out);
	bool has_out = is_pipe(okind);

	if (!has_in && !has_out)
		return;
	if (has_out && !chan_get(&out, okind))
		has_out = false;
	t->in = in.key;
	t->out = out.key;
	if (!has_in)
		t->in.id = 0;
	if (!has_out)
		t->out.id = 0;
	t->send_ev = 0;
	t->advanced = 0;
	t->op = id == CW_NR_tee ? CW_OP_TEE : CW_OP_SPLICE;
}

/*
 * A thread that waits for a new connection in a blocking accept() has stopped
 * serving: its own nice until it adopts the next request's record (reported
 * then whatever its priority: t->sched is cleared). Not for a non-blocking
 * listener: an event loop that accepts may still be serving others.
 */
static __always_inline void sched_idle(int fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct cw_task *t = task_state();
	struct fdtable *fdt;
	struct file **fds;
	struct file *file;

	if (!t || !t->sched)
		return;
	fdt = task->files->fdt;
	if (fd < 0 || (unsigned int)fd >= fdt->max_fds)
		return;
	fds = bpf_rdonly_cast(fdt->fd, 0);
	file = bpf_rdonly_cast(fds[fd & 0xfffffff], bpf_core_type_id_kernel(struct file));
	if (!file || (file->f_flags & CW_O_NONBLOCK))
		return;
	t->sched = 0;
	sched_send(CW_SCHED_IDLE, 0, task, 0);
}

SEC("tp_btf/sys_enter")
int BPF_PROG(handle_enter, struct pt_regs *regs, long id)
{
	struct task_struct *task;
	struct cw_io io;
	struct cw_chan *ch;
	struct cw_task *t;
	__u64 adv = 0;
	__u32 kind;

	if (!write_syscall(id)) {
		if (id == CW_NR_accept || id == CW_NR_accept4)
			sched_idle(CW_ARG1(regs));
		return 0;
	}
	PROFILE_STOP(1, 0);
	task = bpf_get_current_task_btf();
	t = task_state_of(task);
	if (!t)
		return 0;
	PROFILE_STOP(2, 0);
	sdk_sync(t);
	if (id == CW_NR_splice || id == CW_NR_tee) {
		splice_enter(task, t, regs, id);
		return 0;
	}
	/* Zeroed here, not at the program's start: every other syscall returns above. */
	__builtin_memset(&io, 0, sizeof(io));
	/* sendfile(out_fd, in_fd, ...) writes to out_fd; the others' first argument is the fd. */
	kind = fd_resolve(task, CW_ARG1(regs), true, &io);
	if (kind == CW_CHAN_NONE)
		return 0;
	PROFILE_STOP(3, 0);
	if (id == CW_NR_vmsplice && !io.writable) {	/* vmsplice(2) on a read end reads */
		t->in = io.key;
		t->out.id = 0;
		t->op = CW_OP_READ;
		return 0;
	}
	if (kind == CW_CHAN_TCP) {
		/* The first tcp_sendmsg_locked of this syscall publishes, at write_seq. */
		t->op = CW_OP_TCP_ARMED;
		return 0;
	}
	ch = chan_get(&io, kind);
	if (!ch)
		return 0;
	PROFILE_STOP(4, 0);
	/*
	 * Reserve now what the call says it writes, so that its exit needs no
	 * lookup and a writer racing on another CPU reserves after it. Other
	 * calls (writev, sendmsg on a stream, sendfile) add their count at exit.
	 */
	if (io.msgs)
		adv = id == CW_NR_sendmmsg ? CW_ARG3(regs) : 1;
	else if (id == CW_NR_write || id == CW_NR_sendto)
		adv = (__u32)CW_ARG3(regs);	/* at most MAX_RW_COUNT */
	t->advanced = adv;
	t->msgs = io.msgs;
	t->out = io.key;
	t->in.id = 0;
	t->op = CW_OP_WRITE;	/* before writer_note: a writer racing this one sees it */
	writer_note(ch, &io.key, task->pid);
	chan_write_enter(t, ch, adv);
	return 0;
}

/*
 * A new trace id: milliseconds since the Unix epoch in its first 48 bits
 * (big-endian), then 80 random bits, as UUIDv7 does (src/kernel/record.ts
 * mints the same way). Time first keeps the trace store's index appending
 * at its end instead of writing a random page per new trace.
 */
static __noinline void new_trace_id(__u8 id[16])	/* a call: the hot caller's code stays as it was */
{
	__u64 ms = (bpf_ktime_get_boot_ns() + cw_boot_to_epoch_ns) / 1000000;

	*(__u64 *)&id[0] = __builtin_bswap64(ms << 16 | (bpf_get_prandom_u32() & 0xffff));
	*(__u32 *)&id[8] = bpf_get_prandom_u32();
	*(__u32 *)&id[12] = bpf_get_prandom_u32() | 1;	/* never all zero */
}

/*
 * The first read of a TCP socket whose bytes carry no record yet: if the
 * policy says so for its local port, mint a record for its bytes from offset
 * start on (a new trace per connection).
 */
static __always_inline void tcp_mint(struct cw_chan *ch, __u64 start)
{
	struct cw_record rec = {};
	struct cw_event *e;
	struct cw_mint *m;

	if (ch->flags & CW_CHF_MINT_CHECKED)
		return;
	ch->flags |= CW_CHF_MINT_CHECKED;
	m = bpf_map_lookup_elem(&ingress_ports, &ch->tcp.dport);
	if (!m || ch->head)
		return;
	ch->flags |= CW_CHF_INGRESS;
	rec.version = CW_RECORD_VERSION;
	rec.flags = m->flags;
	if (m->sample != 0xffffffff && bpf_get_prandom_u32() > m->sample)
		rec.flags &= ~CW_F_SAMPLED;	/* sampling decides at the root of each new trace */
	rec.priority = m->priority;
	new_trace_id(rec.trace_id);
	rec.event_id = new_id();
	count(CW_C_MINTED, 1);
	if (sampled(&rec)) {
		e = ev_start(CW_EV_INGRESS, &rec);
		if (e) {
			ev_channel(e, ch, false);
			e->flags |= CW_EVF_MINTED;
			ev_submit(e);
		}
	}
	/* The reader adopts it below, like any record found in the channel. */
	seg_publish(ch, &rec, start);
}

/* After a read-family syscall that returned ret, on a pipe, FIFO or UNIX socket. */
static __always_inline void read_exit(struct pt_regs *regs, long id, long ret)
{
	struct task_struct *task;
	struct cw_io io;
	struct cw_chan *ch;
	struct cw_task *t;
	__u64 units, rd0;
	bool peek;
	__u32 kind;

	PROFILE_STOP(1);
	if (ret < 0)
		return;
	task = bpf_get_current_task_btf();
	t = task_state_of(task);
	if (!t)
		return;
	PROFILE_STOP(2);
	__builtin_memset(&io, 0, sizeof(io));
	/* Resolved after the read: a read that blocked before the channel's first tracked write counts. */
	kind = fd_resolve(task, CW_ARG1(regs), false, &io);
	if (kind == CW_CHAN_NONE || kind == CW_CHAN_TCP)
		return;	/* TCP: handle_sock_recv */
	PROFILE_STOP(3);
	if (io.msgs)
		units = id == CW_NR_recvmmsg ? ret : 1;	/* a datagram, even an empty one */
	else
		units = ret;
	if (!units)
		return;
	peek = (id == CW_NR_recvfrom && (CW_ARG4(regs) & MSG_PEEK)) ||
	       (id == CW_NR_recvmsg && (CW_ARG3(regs) & MSG_PEEK)) ||
	       (id == CW_NR_recvmmsg && (CW_ARG4(regs) & MSG_PEEK));
	ch = chan_get(&io, kind);
	if (!ch)
		return;
	PROFILE_STOP(4);
	rd0 = peek ? ch->rd : __sync_fetch_and_add(&ch->rd, units);
	chan_read(t, ch, rd0, units);
}

/* A TCP send by a tracked thread: its bytes start at write_seq. Runs with the socket locked. */
SEC("tp_btf/tcp_sendmsg_locked")
int BPF_PROG(handle_tcp_send, struct sock *sk, struct msghdr *msg, struct sk_buff *skb, int size_goal)
{
	struct cw_task *t;
	struct tcp_sock *tp;
	struct cw_chan *ch;
	struct cw_seg *s;

	PROFILE_STOP(1, 0);
	t = task_state();
	/* Once per syscall: later calls of this send continue its segment. */
	if (!t || t->op != CW_OP_TCP_ARMED)
		return 0;
	PROFILE_STOP(2, 0);
	PROFILE_STOP(3, 0);
	t->op = CW_OP_NONE;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return 0;
	ch = tcp_chan(&sk_out, sk, true, true);
	if (!ch)
		return 0;
	PROFILE_STOP(4, 0);
	s = write_enter(t, ch, tp->write_seq);
	if (s && has_actor_area(&t->rec))
		actor_area_keep(&s->rec);
	t->tcp = ch->tcp;
	t->op = CW_OP_TCP_WRITE;
	return 0;
}

/* A receive on a TCP socket by a tracked thread: bytes below copied_seq were read. */
SEC("tp_btf/sock_recv_length")
int BPF_PROG(handle_sock_recv, struct sock *sk, int ret, int flags)
{
	struct cw_task *t;
	struct tcp_sock *tp;
	struct cw_chan *ch;
	__u32 seq, rd0;

	PROFILE_STOP(1, 0);
	if (ret <= 0 || sk->sk_protocol != IPPROTO_TCP)
		return 0;
	t = task_state();
	if (!t)
		return 0;
	PROFILE_STOP(2, 0);
	PROFILE_STOP(3, 0);
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return 0;
	seq = tp->copied_seq;
	/* copied_seq is past what was read, or at it for a peek. */
	rd0 = (flags & MSG_PEEK) ? seq : seq - ret;
	ch = tcp_chan(&sk_in, sk, false, true);
	if (!ch)
		return 0;
	PROFILE_STOP(4, 0);
	tcp_mint(ch, rd0);
	if (!(flags & MSG_PEEK))
		ch->rd = seq;
	chan_read(t, ch, rd0, ret);
	sched_reader(t, ch);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(handle_exit, struct pt_regs *regs, long ret)
{
	long id = regs->orig_ax;
	struct cw_chan *ch;
	struct cw_task *t;
	__u64 n;
	__u32 op;

	if (read_syscall(id)) {
		read_exit(regs, id, ret);
		return 0;
	}
	if (!write_syscall(id))
		return 0;
	PROFILE_STOP(1, 0);
	t = task_state();
	if (!t || !t->op)
		return 0;
	op = t->op;
	t->op = CW_OP_NONE;

	if (op == CW_OP_TCP_WRITE) {
		if (ret > 0)
			tcp_write_exit(t, ret);
		return 0;
	}
	/* Units moved: bytes, or messages for datagram sockets. */
	if (ret < 0)
		n = 0;
	else if (op == CW_OP_WRITE && t->msgs)
		n = id == CW_NR_sendmmsg ? ret : 1;
	else
		n = ret;
	/* The common write: all of it written, nothing to report. */
	if (op == CW_OP_WRITE && n == t->advanced && !t->send_ev) {
		if (n)
			count(CW_C_SENDS, 1);
		return 0;
	}
	if (n && t->in.id) {
		ch = bpf_map_lookup_elem(&chans, &t->in);
		if (ch)
			chan_read(t, ch, op == CW_OP_TEE ? ch->rd : __sync_fetch_and_add(&ch->rd, n), n);
	}
	if (!t->out.id)
		return 0;
	ch = bpf_map_lookup_elem(&chans, &t->out);
	if (!ch)
		return 0;
	/* 32-bit adds on wr (pos's low half): offsets wrap, the head is not touched. */
	if (t->advanced != n)	/* a short or failed write: take back what did not go */
		__sync_fetch_and_add(&ch->wr, (__u32)(n - t->advanced));
	if (!n)
		return 0;
	/* splice/tee move bytes in one step: they carry what was just adopted. */
	if (op == CW_OP_SPLICE || op == CW_OP_TEE)
		chan_write_enter(t, ch, n);
	else if (!t->advanced)
		__sync_fetch_and_add(&ch->wr, (__u32)n);
	write_exit(t, ch, n);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(handle_fork, struct task_struct *parent, struct task_struct *child)
{
	struct cw_task *pt, *ct;
	struct cw_event *e;

	/* Children inherit a record only inside the run's cgroup. */
	if (!in_scope())
		return 0;
	pt = task_state();
	if (!pt)
		return 0;
	sdk_sync(pt);
	ct = bpf_task_storage_get(&tasks, child, pt, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!ct) {
		count(CW_C_TASK_NOMEM, 1);
		return 0;
	}
	ct->op = CW_OP_NONE;
	ct->send_ev = 0;
	ct->sdk_slot = 0;	/* slots are per thread */
	ct->sdk_gen = 0;
	sched_fork(pt, child);
	if (!sampled(&pt->rec))
		return 0;
	e = ev_next(&pt->rec, CW_EV_FORK);
	ct->rec.event_id = pt->rec.event_id;	/* both continue from the fork */
	if (!e)
		return 0;
	e->arg = BPF_CORE_READ(child, pid);
	e->arg2 = BPF_CORE_READ(child, tgid);
	if (e->arg != e->arg2)
		e->flags |= CW_EVF_THREAD;
	ev_submit(e);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(handle_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct cw_task *t = task_state();
	struct cw_event *e;

	if (!t)
		return 0;
	/* The new program starts with what the old one's code had set; its slot is gone. */
	sdk_sync(t);
	t->sdk_slot = 0;
	t->sdk_gen = 0;
	if (!sampled(&t->rec))
		return 0;
	e = ev_next(&t->rec, CW_EV_EXEC);
	if (!e)
		return 0;
	e->arg = old_pid;
	bpf_probe_read_kernel_str(e->path, sizeof(e->path), BPF_CORE_READ(bprm, filename));
	ev_submit(e);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(handle_exit_task, struct task_struct *p)
{
	struct cw_task *t = task_state();
	struct cw_event *e;

	if (!t)
		return 0;
	sched_exit(t, p);
	if (!sampled(&t->rec))
		return 0;
	e = ev_next(&t->rec, CW_EV_EXIT);
	if (!e)
		return 0;
	e->arg = BPF_CORE_READ(p, exit_code);
	if (BPF_CORE_READ(p, pid) != BPF_CORE_READ(p, tgid))
		e->flags |= CW_EVF_THREAD;
	ev_submit(e);
	return 0;
}

/*
 * The scheduler's socket priority (attached to the run's cgroup only while
 * the scheduler runs): a TCP packet leaves with the priority that the record
 * of the socket's latest bytes maps to, so egress queues can honour it.
 */
SEC("cgroup_skb/egress")
int handle_egress_prio(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;
	struct cw_chan *ch;
	__u32 prio, *v;

	if (!sk)
		return 1;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return 1;
	ch = bpf_sk_storage_get(&sk_out, sk, 0, 0);
	if (!ch || !ch->head)
		return 1;
	prio = ch->seg[(ch->head - 1) & SEG_MASK].rec.priority;
	v = bpf_map_lookup_elem(&sched_skprio, &prio);
	if (v && *v)
		skb->priority = *v - 1;
	return 1;
}

/* TCP connections of the run's processes: the record rides in a header option. */
SEC("sockops")
int handle_sockops(struct bpf_sock_ops *skops)
{
	if (CW_PROFILE_STOP)
		return 1;	/* the option path is part of "the rest" */
	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
					  BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG |
					  BPF_SOCK_OPS_PARSE_UNKNOWN_HDR_OPT_CB_FLAG);
		break;
	case BPF_SOCK_OPS_HDR_OPT_LEN_CB:
		opt_reserve(skops);
		break;
	case BPF_SOCK_OPS_WRITE_HDR_OPT_CB:
		opt_write(skops);
		break;
	case BPF_SOCK_OPS_PARSE_HDR_OPT_CB:
		opt_parse(skops);
		break;
	}
	return 1;
}

/*
 * causeway attach: a connection opened before the attach never passed
 * ESTABLISHED_CB above, where the option callbacks are switched on. User
 * space runs this iterator once per network namespace of the target, with
 * the target's cgroup (id and depth) in cw_iter_cgid/cw_iter_level: it
 * switches them on for the established connections made in that cgroup or
 * below (TCP_BPF_SOCK_OPS_CB_FLAGS, Linux 6.10), so that they carry records
 * from their next segments. Never attached otherwise.
 */
__u64 cw_iter_cgid;
__u32 cw_iter_level;
__u32 cw_iter_enabled;	/* connections switched on by the last run */

#define CW_SOL_TCP 6
#define CW_TCP_BPF_SOCK_OPS_CB_FLAGS 1008

SEC("iter/tcp")
int enable_existing_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct cgroup *cg, *anc = NULL;
	struct tcp_sock *tp;
	__u8 state;
	int flags;

	if (!skc)
		return 0;
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;	/* a request or time-wait socket */
	state = tp->inet_conn.icsk_inet.sk.__sk_common.skc_state;
	if (state != 1 /* TCP_ESTABLISHED */ && state != 8 /* TCP_CLOSE_WAIT */)
		return 0;
	cg = tp->inet_conn.icsk_inet.sk.sk_cgrp_data.cgroup;
	if (!cg || BPF_CORE_READ(cg, level) < (int)cw_iter_level)
		return 0;
	/* Its ancestor at the target's depth (a flexible array: read, not walked). */
	bpf_probe_read_kernel(&anc, sizeof(anc),
			      (void *)((__u64)cg + bpf_core_field_offset(struct cgroup, ancestors) + (__u64)cw_iter_level * sizeof(anc)));
	if (!anc || BPF_CORE_READ(anc, kn, id) != cw_iter_cgid)
		return 0;
	flags = tp->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG | BPF_SOCK_OPS_PARSE_UNKNOWN_HDR_OPT_CB_FLAG;
	if (flags == tp->bpf_sock_ops_cb_flags)
		return 0;
	if (!bpf_setsockopt(tp, CW_SOL_TCP, CW_TCP_BPF_SOCK_OPS_CB_FLAGS, &flags, sizeof(flags)))
		cw_iter_enabled++;
	return 0;
}
