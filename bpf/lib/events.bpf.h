/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/* Counters and events. Needs the maps `counters` and `events`, and cw_emit_events. */
#ifndef CW_EVENTS_BPF_H
#define CW_EVENTS_BPF_H

static __always_inline void count(__u32 which, __u64 n)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &which);

	if (c)
		*c += n;	/* per-CPU: no atomics needed */
}

static __always_inline __u64 new_id(void)
{
	__u64 id = (((__u64)bpf_get_prandom_u32() << 32) | bpf_get_prandom_u32()) & CW_EVENT_ID_MASK;

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

/* Reserve an event and fill what every event has; the caller submits it. */
static __always_inline struct cw_event *ev_start(__u8 type, const struct cw_record *rec)
{
	struct task_struct *task;
	struct cw_event *e;
	__u64 pid_tgid;

	if (!cw_emit_events)
		return NULL;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(CW_C_RB_DROPS, 1);
		return NULL;
	}
	__builtin_memset(e, 0, sizeof(*e));
	pid_tgid = bpf_get_current_pid_tgid();
	e->ts = bpf_ktime_get_boot_ns();
	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->type = type;
	e->rec = *rec;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	task = bpf_get_current_task_btf();
	e->cpu_ns = task->se.sum_exec_runtime;
	if (bpf_core_field_exists(task->ioac)) {
		e->rchar = task->ioac.rchar;
		e->wchar = task->ioac.wchar;
	}
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

/* Names a TCP connection in an event, as the current thread sees it (sent: true if it wrote). */
static __always_inline void ev_tcp(struct cw_event *e, const struct cw_tcp_key *k, bool sent)
{
	e->chan_kind = CW_CHAN_TCP;
	__builtin_memcpy(e->laddr, sent ? k->saddr : k->daddr, 16);
	__builtin_memcpy(e->raddr, sent ? k->daddr : k->saddr, 16);
	e->lport = sent ? k->sport : k->dport;
	e->rport = sent ? k->dport : k->sport;
}

/* Names the channel in an event, as the current thread sees it (sent: true if it wrote). */
static __always_inline void ev_channel(struct cw_event *e, const struct cw_chan *ch, bool sent)
{
	e->chan_kind = ch->kind;
	e->sotype = ch->sotype;
	if (ch->kind == CW_CHAN_TCP)
		ev_tcp(e, &ch->tcp, sent);
	else if (ch->kind == CW_CHAN_UNIX) {
		__builtin_memcpy(e->path, ch->name, sizeof(e->path));
	} else {
		e->chan_ino = ch->key.id;
		e->chan_dev = ch->key.dev;
	}
}

#endif /* CW_EVENTS_BPF_H */
