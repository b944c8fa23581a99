/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The scheduler's kernel side: tell user space at once when a thread comes to
 * hold a record of another priority. Off (policy.sched == 0) it costs one
 * compare per adopted record; on, one event per priority change, not per
 * syscall: t->sched remembers what was told last.
 */
#ifndef CW_SCHED_BPF_H
#define CW_SCHED_BPF_H

#define CW_O_NONBLOCK 04000

static __always_inline bool sched_on(void)
{
	__u32 zero = 0;
	struct cw_policy *p = bpf_map_lookup_elem(&policy, &zero);

	return p && p->sched;
}

static __always_inline void sched_send_tid(__u8 kind, __u8 prio, __u32 tid, __u32 pid, __u64 start, __u32 parent)
{
	struct cw_sched_event *e = bpf_ringbuf_reserve(&sched_rb, sizeof(*e), 0);

	if (!e) {
		count(CW_C_SCHED_LOST, 1);
		return;
	}
	e->ts = bpf_ktime_get_boot_ns();
	e->start = start;
	e->tid = tid;
	e->pid = pid;
	e->parent = parent;
	e->kind = kind;
	e->prio = prio;
	e->pad[0] = e->pad[1] = 0;
	/* The reactor renices at once, not at the next batch. */
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	count(CW_C_SCHED_SENT, 1);
}

static __always_inline void sched_send(__u8 kind, __u8 prio, struct task_struct *task, __u32 parent)
{
	sched_send_tid(kind, prio, BPF_CORE_READ(task, pid), BPF_CORE_READ(task, tgid), BPF_CORE_READ(task, start_boottime), parent);
}

/* The current thread holds t->rec now: tell the reactor if its priority is news. */
static __always_inline void sched_note(struct cw_task *t)
{
	__u16 told = (__u16)t->rec.priority + 1;

	if (t->sched == told || !sched_on())
		return;
	t->sched = told;
	sched_send(CW_SCHED_PRIO, t->rec.priority, bpf_get_current_task_btf(), 0);
}

/*
 * TCP: the current thread read from ch (sk_in). With the scheduler on, it is
 * the likely reader of the next bytes: remember it, so that a record arriving
 * on this connection renices it before it even wakes (sched_arrival).
 */
static __always_inline void sched_reader(const struct cw_task *t, struct cw_chan *ch)
{
	struct task_struct *task;

	if (!t->sched)
		return;	/* the scheduler is off, or never told of this thread */
	task = bpf_get_current_task_btf();
	ch->reader = task->pid;
	ch->reader_start = task->start_boottime;
}

/*
 * A record of another priority arrived (in the TCP option) on a connection
 * whose last reader is known: renice that thread now, not once it has woken
 * and read at its old priority. It is reported again when it reads (a no-op
 * if it was this connection); if another thread reads, that one is reniced
 * then, and this one at its own next adoption.
 */
static __always_inline void sched_arrival(const struct cw_chan *ch, const struct cw_record *rec)
{
	if (!ch->reader || !sched_on())
		return;
	sched_send_tid(CW_SCHED_ARRIVAL, rec->priority, ch->reader, 0, ch->reader_start, 0);
}

/* A thread that was told of forked: its child runs at the parent's nice, whose own the reactor knows. */
static __always_inline void sched_fork(const struct cw_task *pt, struct task_struct *child)
{
	if (!pt->sched || !sched_on())
		return;
	sched_send(CW_SCHED_FORK, pt->rec.priority, child, bpf_get_current_pid_tgid() & 0xffffffff);
}

static __always_inline void sched_exit(const struct cw_task *t, struct task_struct *task)
{
	if (!t->sched || !sched_on())
		return;
	sched_send(CW_SCHED_EXIT, t->rec.priority, task, 0);
}

#endif /* CW_SCHED_BPF_H */
