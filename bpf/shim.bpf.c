// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The kernel shim: carries a struct cw_record with the bytes that tracked
 * threads exchange through pipes and FIFOs, and across fork and exec.
 *
 * Hot path: every syscall of every task on the machine runs handle_enter and
 * handle_exit. Both return after the syscall-number switch unless the
 * syscall can move bytes; then a task that is not tracked returns after one
 * task-storage lookup. A task is tracked when it holds a record: the root
 * gets one from user space, and fork gives one to the children of tracked
 * tasks inside the run's cgroup.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "causeway.h"
#include "syscalls.bpf.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define S_IFMT 00170000
#define S_IFIFO 0010000
#define PIPEFS_MAGIC 0x50495045
#define FMODE_WRITE 0x2
#define E2BIG 7
#define SEG_MASK (CW_SEGS - 1)

/* Set through the skeleton's rodata before load. */
const volatile __u64 cw_cgroup_id = 0;		/* the run's cgroup v2 id */
const volatile __u32 cw_cgroup_level = 0;	/* its depth below the root */
const volatile __u64 cw_wakeup_bytes = 65536;	/* wake the reader past this backlog */
const volatile bool cw_emit_events = true;	/* false: propagate only, no ring buffer */

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct cw_task);
} tasks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct cw_chan_key);
	__type(value, struct cw_chan);
} chans SEC(".maps");

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

static __always_inline void count(__u32 which, __u64 n)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &which);

	if (c)
		*c += n;	/* per-CPU: no atomics needed */
}

static __always_inline bool in_scope(void)
{
	return bpf_get_current_ancestor_cgroup_id(cw_cgroup_level) == cw_cgroup_id;
}

static __always_inline __u64 new_id(void)
{
	__u64 id = ((__u64)bpf_get_prandom_u32() << 32) | bpf_get_prandom_u32();

	return id ? id : 1;
}

static __always_inline bool sampled(const struct cw_record *r)
{
	return r->flags & CW_F_SAMPLED;
}

static __always_inline bool same_record(const struct cw_record *a, const struct cw_record *b)
{
	return a->event_id == b->event_id &&
	       *(__u64 *)&a->trace_id[0] == *(__u64 *)&b->trace_id[0] &&
	       *(__u64 *)&a->trace_id[8] == *(__u64 *)&b->trace_id[8];
}

/* Syscalls that read from their first argument: handled at exit only. */
static __always_inline bool read_syscall(long id)
{
	return id == CW_NR_read || id == CW_NR_readv || id == CW_NR_preadv2;
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
	case CW_NR_splice:
	case CW_NR_tee:
		return true;
	default:
		return false;
	}
}

/* Reserve an event and fill what every event has; the caller submits it. */
static __always_inline struct cw_event *ev_start(__u8 type, const struct cw_record *rec)
{
	struct cw_event *e;
	__u64 pid_tgid;

	if (!cw_emit_events)
		return NULL;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(CW_C_RB_DROPS, 1);
		return NULL;
	}
	pid_tgid = bpf_get_current_pid_tgid();
	e->ts = bpf_ktime_get_boot_ns();
	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->type = type;
	e->nparents = 0;
	e->chan_kind = 0;
	e->flags = 0;
	e->arg = 0;
	e->arg2 = 0;
	e->chan_dev = 0;
	e->chan_ino = 0;
	e->bytes = 0;
	e->rec = *rec;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->path[0] = 0;
	return e;
}

/* The next event on a thread's causal chain: mints its id, names the previous one as parent. */
static __always_inline struct cw_event *ev_next(struct cw_record *rec, __u8 type)
{
	__u64 parent = rec->event_id;
	struct cw_event *e;

	rec->event_id = new_id();
	e = ev_start(type, rec);
	if (e) {
		e->nparents = 1;
		e->parents[0] = parent;
	}
	return e;
}

static __always_inline void ev_submit(struct cw_event *e)
{
	/* Batch wake-ups: the reader also polls on a timer. */
	__u64 flags = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) > cw_wakeup_bytes ?
			      BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;

	bpf_ringbuf_submit(e, flags);
	count(CW_C_EVENTS, 1);
}

static __always_inline void ev_channel(struct cw_event *e, const struct cw_chan *ch)
{
	e->chan_kind = ch->kind;
	e->chan_ino = ch->key.ino;
	e->chan_dev = ch->key.dev;
}

static __always_inline struct cw_task *task_state(void)
{
	struct task_struct *task = bpf_get_current_task_btf();

	/* Most tasks hold no task storage of any map: skip the lookup. */
	if (!task->bpf_storage)
		return NULL;
	return bpf_task_storage_get(&tasks, task, 0, 0);
}

/* Reads a kernel object through its BTF type: plain loads, no helper call (6.2+). */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

/* The channel behind fd, if it is one the shim tracks: fills key, returns true. */
static __always_inline bool fd_channel(int fd, struct cw_chan_key *key, __u32 *kind, bool *writable)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = task->files->fdt;
	struct file *fp, *file;
	struct inode *inode;
	struct super_block *sb;

	if (fd < 0 || (unsigned int)fd >= fdt->max_fds)
		return false;
	/* A variable index into fd[] needs the one helper call of this path. */
	if (bpf_probe_read_kernel(&fp, sizeof(fp), &fdt->fd[fd]) || !fp)
		return false;
	file = bpf_rdonly_cast(fp, bpf_core_type_id_kernel(struct file));
	inode = file->f_inode;
	if ((inode->i_mode & S_IFMT) != S_IFIFO)
		return false;
	sb = inode->i_sb;
	*kind = sb->s_magic == PIPEFS_MAGIC ? CW_CHAN_PIPE : CW_CHAN_FIFO;
	key->ino = inode->i_ino;
	key->dev = sb->s_dev;
	key->pad = 0;
	*writable = file->f_mode & FMODE_WRITE;
	return true;
}

/* Look up a channel, creating it on first use. */
static __always_inline struct cw_chan *chan_get(const struct cw_chan_key *key, __u32 kind)
{
	struct cw_chan *ch = bpf_map_lookup_elem(&chans, key);
	__u32 zero = 0;

	if (ch)
		return ch;
	ch = bpf_map_lookup_elem(&chan_zero, &zero);
	if (!ch)
		return NULL;
	/* EEXIST: another thread created it first, which is fine. */
	if (bpf_map_update_elem(&chans, key, ch, BPF_NOEXIST) == -E2BIG)
		count(CW_C_CHAN_FULL, 1);
	ch = bpf_map_lookup_elem(&chans, key);
	if (!ch)
		return NULL;
	if (ch->key.ino == 0) {
		ch->key = *key;
		ch->kind = kind;
	}
	return ch;
}

/* Bytes about to be written at offset ch->wr will carry rec: append a segment. */
static __always_inline void seg_publish(struct cw_chan *ch, const struct cw_record *rec)
{
	__u32 head = ch->head;
	__u64 start = ch->wr;
	struct cw_seg *s;

	if (head) {
		s = &ch->seg[(head - 1) & SEG_MASK];
		if (s->start == start) {	/* last segment is empty: replace it */
			s->rec = *rec;
			return;
		}
	}
	if (head >= CW_SEGS) {
		/* The slot to reuse is the oldest; lost if its bytes are unread. */
		struct cw_seg *next = &ch->seg[(head + 1) & SEG_MASK];

		if (next->start > ch->rd)
			count(CW_C_SEG_OVERWRITE, 1);
	}
	s = &ch->seg[head & SEG_MASK];
	s->start = start;
	s->rec = *rec;
	asm volatile("" ::: "memory");	/* publish the segment before the head (x86 keeps store order) */
	ch->head = head + 1;
}

/*
 * The current thread read bytes [rd0, rd0 + n) of ch: adopt the record of the
 * last of them; name every segment they span. consume=false peeks (tee).
 */
static __always_inline void chan_read(struct cw_task *t, struct cw_chan *ch, __u64 n, bool consume)
{
	__u64 rd0 = consume ? __sync_fetch_and_add(&ch->rd, n) : ch->rd;
	__u64 rd1 = rd0 + n, newer_start = ~0ULL;
	__u64 parents[CW_MAX_PARENTS] = {};
	__u32 head = ch->head, found = 0, newest = 0, i;
	bool covered = false;
	struct cw_event *e;
	struct cw_seg *s;

	/* Walk from the newest segment back to the one holding byte rd0. */
	for (i = 0; i < CW_SEGS; i++) {
		__u32 idx;

		if (i >= head)
			break;
		idx = (head - 1 - i) & SEG_MASK;
		s = &ch->seg[idx];
		if (s->start >= rd1 || s->start == newer_start) {
			newer_start = s->start;	/* written after, or empty */
			continue;
		}
		newer_start = s->start;
		if (found == 0)
			newest = idx;
		if (found < CW_MAX_PARENTS)
			parents[found] = s->rec.event_id;
		found++;
		if (s->start <= rd0) {
			covered = true;
			break;
		}
	}
	if (!covered)
		count(CW_C_INGRESS, 1);
	if (!found)
		return;
	count(CW_C_RECVS, 1);
	if (found > CW_MAX_PARENTS)
		count(CW_C_PARENTS_TRUNC, 1);
	s = &ch->seg[newest & SEG_MASK];
	if (found == 1 && s->rec.event_id == t->src)
		return;	/* still reading the run of bytes adopted last time */

	t->rec = s->rec;
	t->src = s->rec.event_id;
	if (!sampled(&t->rec))
		return;
	t->rec.event_id = new_id();
	e = ev_start(found > 1 ? CW_EV_JOIN : CW_EV_RECV, &t->rec);
	if (!e)
		return;
	ev_channel(e, ch);
	e->bytes = n;
	if (!covered)
		e->flags |= CW_EVF_INGRESS;
	/* Parents oldest first, so the adopted one is last. */
	found = found > CW_MAX_PARENTS ? CW_MAX_PARENTS : found;
	e->nparents = found;
	for (i = 0; i < CW_MAX_PARENTS; i++)
		if (i < found)
			e->parents[i] = parents[found - 1 - i];
	ev_submit(e);
}

/* Before a write: make the bytes carry the thread's record. */
static __always_inline void write_enter(struct cw_task *t, struct cw_chan *ch)
{
	struct cw_record rec = t->rec;
	__u32 head = ch->head;

	t->send_ev = 0;
	/* Consecutive writes under one record extend its segment: no event. */
	if (head && same_record(&ch->seg[(head - 1) & SEG_MASK].rec, &t->rec))
		return;
	if (sampled(&rec)) {
		rec.event_id = new_id();	/* a new segment is a send event */
		t->send_ev = rec.event_id;
		t->send_parent = t->rec.event_id;
		t->send_ts = bpf_ktime_get_boot_ns();	/* before any reader can see the bytes */
	}
	seg_publish(ch, &rec);
}

/* After a write of n > 0 bytes (ch->wr already counts them). */
static __always_inline void write_exit(struct cw_task *t, struct cw_chan *ch, __u64 n)
{
	struct cw_event *e;

	count(CW_C_SENDS, 1);
	if (!t->send_ev)
		return;
	t->rec.event_id = t->send_ev;
	t->send_ev = 0;
	e = ev_start(CW_EV_SEND, &t->rec);
	if (!e)
		return;
	ev_channel(e, ch);
	e->ts = t->send_ts;
	e->bytes = n;
	e->nparents = 1;
	e->parents[0] = t->send_parent;
	ev_submit(e);
}

SEC("tp_btf/sys_enter")
int BPF_PROG(handle_enter, struct pt_regs *regs, long id)
{
	struct cw_chan_key key = {}, key2 = {};
	struct cw_chan *ch;
	struct cw_task *t;
	__u32 kind, kind2;
	bool wr, wr2, has, has2;

	if (!write_syscall(id))
		return 0;
	t = task_state();
	if (!t)
		return 0;

	if (id == CW_NR_splice || id == CW_NR_tee) {
		/* splice(in, off, out, off, len, flags), tee(in, out, len, flags) */
		has = fd_channel(CW_ARG1(regs), &key, &kind, &wr);
		has2 = fd_channel(id == CW_NR_tee ? CW_ARG2(regs) : CW_ARG3(regs), &key2, &kind2, &wr2);
		if (!has && !has2)
			return 0;
		if (has2 && !chan_get(&key2, kind2))
			key2.ino = 0;
		t->in = key;
		t->out = key2;
		t->send_ev = 0;
		t->advanced = 0;
		t->op = id == CW_NR_tee ? CW_OP_TEE : CW_OP_SPLICE;
		return 0;
	}
	/* sendfile(out_fd, in_fd, ...) writes to out_fd; the others' first argument is the fd. */
	if (!fd_channel(CW_ARG1(regs), &key, &kind, &wr))
		return 0;
	/* vmsplice(2) on a read end reads. */
	if (id == CW_NR_vmsplice && !wr) {
		t->in = key;
		t->out.ino = 0;
		t->op = CW_OP_READ;
		return 0;
	}
	ch = chan_get(&key, kind);
	if (!ch)
		return 0;
	write_enter(t, ch);
	/* write(2) says its size: account for it now, so that exit needs no lookup. */
	t->advanced = id == CW_NR_write ? CW_ARG3(regs) : 0;
	if (t->advanced)
		__sync_fetch_and_add(&ch->wr, t->advanced);
	t->out = key;
	t->in.ino = 0;
	t->op = CW_OP_WRITE;
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(handle_exit, struct pt_regs *regs, long ret)
{
	struct cw_chan *ch;
	struct cw_task *t;
	__u64 n = ret > 0 ? ret : 0;
	long id = regs->orig_ax;
	struct cw_chan_key key;
	__u32 op, kind;
	bool wr;

	if (read_syscall(id)) {
		/*
		 * Resolved after the read: the fd still names the channel, and a
		 * read that blocked before the channel's first tracked write counts.
		 */
		if (!n)
			return 0;
		t = task_state();
		if (!t || !fd_channel(CW_ARG1(regs), &key, &kind, &wr))
			return 0;
		ch = bpf_map_lookup_elem(&chans, &key);
		if (ch)
			chan_read(t, ch, n, true);
		return 0;
	}
	if (!write_syscall(id))
		return 0;
	t = task_state();
	if (!t || !t->op)
		return 0;
	op = t->op;
	t->op = CW_OP_NONE;
	/* The common write: all of it written, nothing to report. */
	if (op == CW_OP_WRITE && n == t->advanced && !t->send_ev) {
		if (n)
			count(CW_C_SENDS, 1);
		return 0;
	}

	if (n && t->in.ino) {
		ch = bpf_map_lookup_elem(&chans, &t->in);
		if (ch)
			chan_read(t, ch, n, op != CW_OP_TEE);
	}
	if (!t->out.ino)
		return 0;
	ch = bpf_map_lookup_elem(&chans, &t->out);
	if (!ch)
		return 0;
	if (t->advanced != n)	/* a short or failed write(2): take back what did not go */
		__sync_fetch_and_add(&ch->wr, n - t->advanced);
	if (!n)
		return 0;
	/* splice/tee move bytes in one step: they carry what was just adopted. */
	if (op == CW_OP_SPLICE || op == CW_OP_TEE) {
		write_enter(t, ch);
		__sync_fetch_and_add(&ch->wr, n);
	} else if (!t->advanced) {
		__sync_fetch_and_add(&ch->wr, n);
	}
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
	ct = bpf_task_storage_get(&tasks, child, pt, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!ct) {
		count(CW_C_TASK_NOMEM, 1);
		return 0;
	}
	ct->op = CW_OP_NONE;
	ct->send_ev = 0;
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
	struct cw_task *t;
	struct cw_event *e;

	t = task_state();
	if (!t || !sampled(&t->rec))
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
	struct cw_task *t;
	struct cw_event *e;

	t = task_state();
	if (!t || !sampled(&t->rec))
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
