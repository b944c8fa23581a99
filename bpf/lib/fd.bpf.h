/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * What a file descriptor of the current task refers to, as far as the shim
 * follows it: a pipe or FIFO, a UNIX socket, or a TCP socket. Plain BTF loads
 * (bpf_rdonly_cast, 6.2+; a variable fd index through an untrusted void cast).
 */
#ifndef CW_FD_BPF_H
#define CW_FD_BPF_H

#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define S_IFIFO 0010000
#define PIPEFS_MAGIC 0x50495045
#define FMODE_WRITE 0x2
#define AF_UNIX 1
#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define IPPROTO_TCP 6

extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

/* A resolved fd, for one direction of data. */
struct cw_io {
	struct cw_chan_key key;		/* pipe, FIFO, UNIX (the receiving socket) */
	struct sock *sk, *peer;		/* UNIX: this socket and its peer, to name a new channel */
	struct sock *recv;		/* UNIX: the receiving socket (its early key, see unix_early_key) */
	void *inst;			/* FIFO: the pipe instance (a FIFO reopened gets a new one) */
	__u32 inst_head;		/* FIFO: its head counter now */
	__u8 sotype;
	bool writable;			/* the file is open for writing */
	bool msgs;			/* UNIX datagram or seqpacket: counted in messages */
};

/* IPv4 addresses are kept as IPv4-mapped IPv6, so that both socket families agree. */
static __always_inline void v4_mapped(__u8 *dst, __u32 addr)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &addr, 4);
}

static __always_inline void tcp_addrs(struct sock *sk, __u8 *local, __u8 *remote)
{
	if (sk->__sk_common.skc_family == AF_INET) {
		v4_mapped(local, sk->__sk_common.skc_rcv_saddr);
		v4_mapped(remote, sk->__sk_common.skc_daddr);
	} else {
		__builtin_memcpy(local, &sk->__sk_common.skc_v6_rcv_saddr, 16);
		__builtin_memcpy(remote, &sk->__sk_common.skc_v6_daddr, 16);
	}
}

/* A socket's inode (its identity for map chans), or NULL if it has none (orphaned). */
static __always_inline struct inode *sock_inode(struct sock *sk)
{
	struct socket *sock;
	struct file *file;

	if (!sk)
		return NULL;
	sock = bpf_rdonly_cast(sk->sk_socket, bpf_core_type_id_kernel(struct socket));
	if (!sock)
		return NULL;
	file = sock->file;
	return file ? file->f_inode : NULL;
}

/*
 * A connection's receiving socket has no inode until the server accepts it,
 * but its client may write before that: those bytes go to a channel keyed by
 * the socket's address and the client's struct pid (a new connection at a
 * reused address tells itself apart by the latter), which moves to the
 * inode's key when the channel is first used after the accept (chan_get).
 */
static __always_inline void unix_early_key(struct sock *recv, struct cw_chan_key *k)
{
	__u64 pid = 0;

	/* The pointer's value as a number (rare path: one helper call). */
	bpf_probe_read_kernel(&pid, sizeof(pid), &recv->sk_peer_pid);
	k->id = (__u64)recv;
	k->dev = 0;	/* no inode has device 0 */
	k->gen = (__u32)(pid >> 6);
	k->kind = CW_CHAN_UNIX;
}

/*
 * Resolves fd of task (the current thread) for data that it writes
 * (write=true) or reads.
 * Returns the channel kind, or CW_CHAN_NONE if the shim does not follow it.
 * TCP is only recognised here: its hooks (tcp_sendmsg_locked,
 * sock_recv_length) are handed the socket itself. Every load is a plain BTF
 * or untrusted load (bpf_rdonly_cast), no helper call.
 */
static __always_inline __u32 fd_resolve(struct task_struct *task, int fd, bool write, struct cw_io *io)
{
	struct fdtable *fdt = task->files->fdt;
	struct file **fds;
	struct file *file;
	struct socket *sock;
	struct inode *inode;
	struct sock *sk;
	__u16 family;
	__u32 mode;

	if (fd < 0 || (unsigned int)fd >= fdt->max_fds)
		return CW_CHAN_NONE;
	/* An untrusted void cast allows the variable index: a faulting load, not a helper call. */
	fds = bpf_rdonly_cast(fdt->fd, 0);
	file = bpf_rdonly_cast(fds[fd & 0xfffffff], bpf_core_type_id_kernel(struct file));
	if (!file)
		return CW_CHAN_NONE;
	inode = file->f_inode;
	if (!inode)
		return CW_CHAN_NONE;
	mode = inode->i_mode & S_IFMT;
	io->writable = file->f_mode & FMODE_WRITE;

	if (mode == S_IFIFO) {
		struct super_block *sb = inode->i_sb;

		io->key.kind = sb->s_magic == PIPEFS_MAGIC ? CW_CHAN_PIPE : CW_CHAN_FIFO;
		io->key.id = inode->i_ino;
		io->key.dev = sb->s_dev;
		io->key.gen = io->key.kind == CW_CHAN_FIFO ? inode->i_generation : 0;
		if (io->key.kind == CW_CHAN_FIFO) {
			struct pipe_inode_info *pipe = bpf_rdonly_cast(file->private_data,
								       bpf_core_type_id_kernel(struct pipe_inode_info));

			io->inst = file->private_data;
			io->inst_head = pipe->head;
		}
		return io->key.kind;
	}
	if (mode != S_IFSOCK)
		return CW_CHAN_NONE;

	sock = bpf_rdonly_cast(file->private_data, bpf_core_type_id_kernel(struct socket));
	sk = sock->sk;
	if (!sk)
		return CW_CHAN_NONE;
	family = sk->__sk_common.skc_family;
	if (family == AF_UNIX) {
		struct unix_sock *u = bpf_rdonly_cast(sk, bpf_core_type_id_kernel(struct unix_sock));
		struct inode *recv;

		io->sk = sk;
		io->peer = u->peer;
		io->sotype = sk->sk_type;
		io->msgs = io->sotype != SOCK_STREAM;
		/* The channel is the receiving socket: bytes queue there. */
		io->recv = write ? io->peer : sk;
		if (!io->recv) {
			count(CW_C_UNFOLLOWED, 1);	/* unconnected datagram: no peer to key on */
			return CW_CHAN_NONE;
		}
		io->key.kind = CW_CHAN_UNIX;
		recv = write ? sock_inode(io->peer) : inode;
		if (!recv) {
			unix_early_key(io->recv, &io->key);	/* not accepted yet */
			return CW_CHAN_UNIX;
		}
		io->key.id = recv->i_ino;
		io->key.dev = recv->i_sb->s_dev;
		return CW_CHAN_UNIX;
	}
	if ((family == AF_INET || family == AF_INET6) && sk->sk_protocol == IPPROTO_TCP)
		return CW_CHAN_TCP;
	return CW_CHAN_NONE;
}

/* A UNIX channel's name: the bound address of the receiving or else the sending socket. */
static __always_inline void unix_name(char *dst, struct sock *recv, struct sock *send)
{
	struct unix_sock *u = bpf_rdonly_cast(recv, bpf_core_type_id_kernel(struct unix_sock));
	struct unix_address *addr = u->addr;
	int len;

	if (!addr && send) {
		u = bpf_rdonly_cast(send, bpf_core_type_id_kernel(struct unix_sock));
		addr = u->addr;
	}
	dst[0] = 0;
	if (!addr)
		return;	/* socketpair, or neither end bound */
	len = addr->len - 2;	/* minus sun_family */
	if (len <= 0)
		return;
	if (len > CW_PATH_BYTES - 1)
		len = CW_PATH_BYTES - 1;
	bpf_probe_read_kernel(dst, len & (CW_PATH_BYTES - 1), addr->name[0].sun_path);
	dst[len & (CW_PATH_BYTES - 1)] = 0;
}

#endif /* CW_FD_BPF_H */
