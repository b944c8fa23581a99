/* SPDX-License-Identifier: MIT */
/*
 * Layouts shared by the kernel shim (bpf/) and the addon (native/).
 * src/kernel/record.ts, events.ts and channel.ts decode the same bytes: change them together
 * and bump CW_RECORD_VERSION / CW_EVENT_VERSION.
 */
#ifndef CAUSEWAY_H
#define CAUSEWAY_H

#define CW_RECORD_VERSION 1
#define CW_EVENT_VERSION 2

/* Record flags. */
#define CW_F_SAMPLED (1u << 0)	/* emit events for this trace */

#define CW_ACTOR_BYTES 32
#define CW_MAX_PARENTS 4	/* parents named in one event; more are counted */
#define CW_SEGS 16		/* records pending in one channel (power of two) */
#define CW_PATH_BYTES 64
#define CW_EVENT_ID_MASK 0xffffffffffffULL	/* event ids are 48 bits: they cross hosts whole */

/*
 * The TCP header option that carries a record between hosts (RFC 6994
 * experimental option, 28 bytes: what fits beside timestamps):
 *   0 kind (253 by default)   1 length (28)   2-3 ExID, big-endian
 *   4 version << 4 | flags (bit 0: sampled)   5 priority
 *   6-21 trace id             22-27 event id, 48 bits big-endian
 * It names the record of the last byte of the segment, from the segment's
 * first byte on. The actor area does not cross hosts.
 */
#define CW_OPT_LEN 28
#define CW_OPT_VERSION 1
#define CW_OPT_F_SAMPLED (1u << 0)
#define CW_OPT_F_ACTOR (1u << 1)	/* the record has an actor area: on this host, in map actor_areas */

/* The metadata record: 64 bytes, carried with bytes, inherited across fork/exec. */
struct cw_record {
	__u8 version;
	__u8 flags;
	__u8 priority;
	__u8 reserved0;
	__u32 reserved1;
	__u8 trace_id[16];
	__u64 event_id;		/* the latest event of this causal chain */
	__u8 actor[CW_ACTOR_BYTES];	/* owned by meta-applications */
};

/*
 * A pipe's, FIFO's or UNIX socket's identity (map chans): an inode that the
 * kernel does not hand to another object while this one lives. Pipe and
 * socket inode numbers come from a counter (get_next_ino) and are not reused;
 * a FIFO is a file whose inode number a new file may reuse once it is
 * deleted, which its i_generation tells apart.
 */
struct cw_chan_key {
	__u64 id;		/* inode number: the pipe's, the FIFO's, or the receiving UNIX socket's */
	__u32 dev;		/* the device of that inode (kernel encoding) */
	__u32 kind;		/* enum cw_chan_kind */
	__u32 gen;		/* FIFO: the inode's i_generation; otherwise 0 */
	__u32 pad;
};

/* A TCP connection in one direction of its data: names it in events (not a map key). */
struct cw_tcp_key {
	__u8 saddr[16];		/* sender; IPv4 as ::ffff:a.b.c.d */
	__u8 daddr[16];		/* receiver */
	__u16 sport, dport;	/* host byte order */
	__u32 pad;
};

/* A trusted network (map trusted_nets): IPv4 as IPv4-mapped IPv6, prefix + 96. */
struct cw_lpm_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* Per-thread state (task storage). User space writes rec and clears src. */
struct cw_task {
	struct cw_record rec;
	__u64 src;		/* event id of the channel segment last adopted */
	/* The syscall in flight, from sys_enter to sys_exit. */
	struct cw_chan_key out;	/* pipe/FIFO/UNIX written by the syscall in flight; id 0 = none */
	struct cw_chan_key in;	/* splice/tee/vmsplice: the pipe read */
	struct cw_tcp_key tcp;	/* TCP connection written by the syscall in flight (for its send event) */
	__u64 send_ev;		/* event id minted for a new segment at enter, 0 = none */
	__u64 send_parent;
	__u64 send_ts;		/* when the new segment was published */
	__u64 advanced;		/* units already added to out's wr at enter (write, send, sendto) */
	__u32 op;		/* CW_OP_*, 0 = nothing pending */
	__u8 msgs;		/* out counts messages (UNIX datagrams) */
	__u8 pad;
	__u16 sched;		/* the scheduler: 1 + the priority user space was last told of; 0 = none yet, or idle */
	/* The in-process SDK (struct cw_sdk_slot): 0 = the thread has no slot. */
	__u32 sdk_slot;		/* slot index + 1 in its process's map of sdk_procs */
	__u32 sdk_gen;		/* the slot's app_gen that rec reflects; 0 = rec is the kernel's own */
};

/*
 * One thread's slot of the in-process SDK: a BPF_F_MMAPABLE array per process
 * (an inner map of sdk_procs, keyed by tgid), mapped into that process only.
 * The thread writes app_* (no syscall); the shim reads them at the thread's
 * next write, fork or exec. The shim writes kern_* whenever the thread adopts
 * a record from bytes it read. Only the owning thread writes its app_* and
 * only its own syscalls read them, so no lock is needed.
 */
#define CW_SDK_SLOTS 16		/* threads per process */
#define CW_SDK_SLOT_BYTES 256
struct cw_sdk_slot {
	__u32 app_gen;		/* bumped by the thread after changing app_active or app_rec; never 0 once set */
	__u32 app_active;	/* 1: app_rec is the thread's record; 0: the kernel's own (kern_rec) */
	__u32 kern_gen;		/* bumped by the shim after writing kern_rec */
	__u32 tid;		/* the owning thread (set by the runtime) */
	__u8 reserved[48];
	struct cw_record app_rec;	/* offset 64 */
	struct cw_record kern_rec;	/* offset 128 */
	__u8 reserved2[64];
};

/*
 * Kernel-side policy that actors set (map policy, one entry). Hooks run after
 * the fact; what must happen at once is decided here.
 */
enum cw_join_rule {
	CW_JOIN_LAST = 0,	/* adopt the record of the last byte read (default) */
	CW_JOIN_FIRST,		/* adopt the record of the first byte read */
	CW_JOIN_PRIORITY,	/* adopt the highest priority; ties: the last */
};

struct cw_policy {
	__u8 join_rule;		/* enum cw_join_rule */
	__u8 sched;		/* 1: tell the scheduler's reactor of priority changes (ring buffer sched_rb) */
	__u8 pad[6];
};

/*
 * The scheduler's feed (ring buffer sched_rb, read by native/sched.cc): a
 * thread whose record's priority changed (a read that adopted another
 * record, an SDK change, a record written by user space), a fork and an
 * exit of a thread that was told of. Each wakes the reactor at once.
 */
enum cw_sched_kind {
	CW_SCHED_PRIO = 1,	/* tid now holds a record of priority prio */
	CW_SCHED_FORK,		/* tid was forked by parent (and runs at its nice) */
	CW_SCHED_EXIT,		/* tid exited */
	CW_SCHED_IDLE,		/* tid waits in a blocking accept(): it serves no one, at its own nice */
	CW_SCHED_ARRIVAL,	/* a record of priority prio arrived where tid read last (reported by the receive path, not by tid) */
};

struct cw_sched_event {
	__u64 ts;		/* CLOCK_BOOTTIME ns of the change */
	__u64 start;		/* the thread's start_boottime (ns): with tid, who it is */
	__u32 tid, pid;
	__u32 parent;		/* fork: the parent thread */
	__u8 kind;		/* enum cw_sched_kind */
	__u8 prio;
	__u8 pad[2];
};

/* Egress: map sched_skprio, by record priority: 0 = leave skb->priority, else 1 + the value. */
#define CW_SCHED_PRIOS 256

/* Minting on ingress (map ingress_ports, keyed by local TCP port, host order). */
struct cw_mint {
	__u8 flags;		/* the new record's flags (CW_F_SAMPLED) */
	__u8 priority;
	__u8 pad[2];
	__u32 sample;		/* sampled only if a random u32 <= sample (0xffffffff: always) */
};

enum cw_op {
	CW_OP_NONE = 0,
	CW_OP_READ,		/* in: consume bytes */
	CW_OP_WRITE,		/* out: segment registered at enter */
	CW_OP_TCP_ARMED,	/* a write syscall on a TCP socket: the first tcp_sendmsg_locked publishes */
	CW_OP_TCP_WRITE,	/* tcp: segment published at write_seq; send event at exit */
	CW_OP_SPLICE,		/* in and/or out, both settled at exit */
	CW_OP_TEE,		/* in: peek; out: settled at exit */
};

enum cw_chan_kind {
	CW_CHAN_NONE = 0,
	CW_CHAN_PIPE,
	CW_CHAN_FIFO,
	CW_CHAN_UNIX,		/* sotype says stream, dgram or seqpacket */
	CW_CHAN_TCP,
};

#define CW_TRUST_OUT_KNOWN (1u << 0)	/* whether the receiver (daddr) is trusted is known */
#define CW_TRUST_OUT (1u << 1)
#define CW_TRUST_IN_KNOWN (1u << 2)	/* whether the sender (saddr) is trusted is known */
#define CW_TRUST_IN (1u << 3)
#define CW_TRUST_OUT_STRIPPED (1u << 4)	/* the destination port strips records on egress */

#define CW_CHF_INGRESS (1u << 0)	/* unrecorded bytes were read here: reported once */
#define CW_CHF_READ (1u << 1)		/* a tracked thread reads here (TCP sk_out: the stack sends): rd is meaningful */
#define CW_CHF_MINT_CHECKED (1u << 2)	/* TCP: the ingress policy was looked up for this socket */

/*
 * One run of bytes in a channel that carries one record. A writer reserves
 * the slot of segment index h (atomically, with its offsets: see cw_chan.pos),
 * then fills start and rec, then writes seq = h + 1. Readers use a slot only
 * if its seq is the one they expect for the index they look at: a slot that
 * is reserved and not filled yet belongs to a writer still in sys_enter,
 * whose bytes are not in the channel yet.
 */
struct cw_seg {
	__u64 start;		/* channel offset of the first byte (32 bits, wrapping; TCP: a sequence number) */
	struct cw_record rec;
	__u32 seq;		/* segment index + 1 once filled; 0: never filled, or being refilled */
	__u32 pad;
};

/*
 * Per-channel accounting. Offsets are bytes (pipes, FIFOs, UNIX streams),
 * messages (UNIX datagrams and seqpackets), or TCP sequence numbers (the
 * kernel counts those: wr is unused). All of them are compared modulo 2^32
 * (a channel never holds 2 GiB unread).
 * Pipes, FIFOs and UNIX sockets: map chans, keyed by inode. TCP: socket-local
 * storage, freed with the socket: sk_out on the sending socket (segments its
 * writers published, which the option announces), sk_in on the receiving one
 * (segments the options announced, which its readers adopt).
 */
struct cw_chan {
	/*
	 * Reserved in one atomic step, so that segments are in the order of
	 * their offsets: a writer's offsets (fetch-and-add of its length on wr)
	 * and, when it starts a segment, its slot (+1 on head). Little-endian:
	 * wr is pos's low half, head its high half.
	 */
	union {
		__u64 pos;
		struct {
			__u32 wr;	/* units written so far (reserved at sys_enter where known), modulo 2^32 */
			__u32 head;	/* segments reserved so far; ring index = head % CW_SEGS */
		};
	};
	__u64 rd;		/* units read so far (compared modulo 2^32) */
	struct cw_chan_key key;
	struct cw_tcp_key tcp;
	__u32 writer;		/* pipe, FIFO, UNIX: the thread that entered a write here last (tid) */
	__u16 kind;		/* enum cw_chan_kind */
	__u8 sotype;		/* UNIX: SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET */
	__u8 trust;		/* TCP: CW_TRUST_* bits, each decided once per channel */
	__u32 flags;		/* CW_CHF_* */
	__u32 inst_head;	/* FIFO: the highest pipe->head seen (it only grows in one instance) */
	__u64 inst;		/* FIFO: the pipe instance (struct pipe_inode_info) its counters belong to */
	char name[CW_PATH_BYTES];	/* UNIX: bound path, "\0abstract", or empty (socketpair) */
	/* TCP sk_in, with the scheduler on: the thread that read last (tid, start_boottime), reniced when a record arrives. */
	__u32 reader;
	__u32 reader_pad;
	__u64 reader_start;
	struct cw_seg seg[CW_SEGS];
};

enum cw_event_type {
	CW_EV_FORK = 1,
	CW_EV_EXEC,
	CW_EV_EXIT,
	CW_EV_SEND,
	CW_EV_RECV,
	CW_EV_JOIN,
	CW_EV_INGRESS,		/* a tracked thread read bytes that carried no record (once per channel) */
};

#define CW_EVF_THREAD (1u << 0)	/* fork/exit of a thread, not a process */
#define CW_EVF_INGRESS (1u << 1)	/* some bytes read carried no record */
#define CW_EVF_MINTED (1u << 2)	/* ingress: the policy minted the record this event carries */

/* One event to user space, fixed size. */
struct cw_event {
	__u64 ts;		/* CLOCK_BOOTTIME ns; user space converts to epoch */
	__u32 pid, tid;
	__u8 type, nparents, chan_kind, flags;
	__u32 arg;		/* fork: child tid; exit: exit code */
	__u32 arg2;		/* fork: child pid */
	__u32 chan_dev;		/* pipe, FIFO */
	__u64 chan_ino;		/* pipe, FIFO */
	__u64 bytes;		/* bytes (or messages, for UNIX datagrams) moved */
	__u64 parents[CW_MAX_PARENTS];
	struct cw_record rec;	/* the record after this event */
	char comm[16];
	char path[CW_PATH_BYTES];	/* exec: the file name; UNIX: the socket's name */
	__u8 laddr[16], raddr[16];	/* TCP: local and remote address, as the thread sees them */
	__u16 lport, rport;
	__u8 sotype;		/* UNIX: socket type */
	__u8 pad[3];
	/* The thread's own accounting when the event happened (for accountants). */
	__u64 cpu_ns;		/* CPU time it has run (sum_exec_runtime) */
	__u64 rchar, wchar;	/* bytes it has read and written through syscalls */
};

/* Per-CPU counters: everything that is not an event, every drop and failure. */
enum cw_counter {
	CW_C_EVENTS,		/* events submitted */
	CW_C_RB_DROPS,		/* ring buffer full: event lost */
	CW_C_TASK_NOMEM,	/* task storage could not be created: child untracked */
	CW_C_CHAN_FULL,		/* channel map full: a pipe, FIFO or UNIX socket went unfollowed */
	CW_C_SEG_OVERWRITE,	/* a segment was overwritten before it was read */
	CW_C_PARENTS_TRUNC,	/* a join had more parents than an event names */
	CW_C_INGRESS,		/* reads of bytes written by no tracked thread (not a drop) */
	CW_C_UNFOLLOWED,	/* sends the shim cannot follow: unconnected datagrams (not a drop) */
	CW_C_OPT_WRITTEN,	/* TCP segments that carried the record option */
	CW_C_OPT_NOSPACE,	/* TCP segments with a record but no room for the option */
	CW_C_OPT_BOUNDARY,	/* TCP segments holding bytes of two records: the first one's tail is misattributed */
	CW_C_OPT_RECEIVED,	/* record options accepted from peers */
	CW_C_OPT_UNTRUSTED_OUT,	/* records not written towards untrusted destinations */
	CW_C_OPT_UNTRUSTED_IN,	/* record options ignored from untrusted peers */
	CW_C_OPT_MALFORMED,	/* record options rejected: bad length or version, zero ids, no payload (a record lost) */
	CW_C_OPT_STALE,		/* record options for bytes older than the last one (reordering: a record lost) */
	CW_C_SENDS,		/* write syscalls that carried a record */
	CW_C_RECVS,		/* read syscalls that found a record */
	CW_C_MINTED,		/* records minted on ingress by policy */
	CW_C_OPT_STRIPPED,	/* records not written towards ports that strip on egress */
	CW_C_SDK_SYNCS,		/* records taken from an SDK slot */
	CW_C_SDK_INVALID,	/* SDK slot records refused (bad version) */
	CW_C_SK_NOMEM,		/* socket storage could not be created: a TCP connection went unfollowed */
	CW_C_CHAN_NEW,		/* channels created in map chans (user space sweeps the dead ones) */
	CW_C_ACTOR_LOST,	/* a TCP option announced an actor area that this host does not hold */
	CW_C_OPT_BAD_ACK,	/* record options on segments that tcp_ack() discards for their ACK: never taken (not a drop) */
	CW_C_OPT_DUPLICATE,	/* segments carrying more than one record option: none taken (a record lost) */
	CW_C_SCHED_SENT,	/* reports to the scheduler's reactor: priority changes, forks and exits of threads it was told of */
	CW_C_SCHED_LOST,	/* sched_rb full: a report lost (a priority change: the thread keeps its nice) */
	CW_C_WRITERS_RACED,	/* writes that entered while another thread's write to the same pipe, FIFO or UNIX socket was in flight: their bytes may land in the other order than their offsets (not a drop) */
	CW_C_MAX,
};

#endif /* CAUSEWAY_H */
