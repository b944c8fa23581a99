/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/* Counters and events. Needs the maps `counters`, `events` and `id_gen`, and cw_emit_events. */
#ifndef CW_EVENTS_BPF_H
#define CW_EVENTS_BPF_H

static __always_inline void count(__u32 which, __u64 n)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &which);

	if (c)
		*c += n;	/* per-CPU: no atomics needed */
}

#define CW_GOLDEN 0x9e3779b97f4a7c15ULL

/*
 * A new 48-bit event id: splitmix64 over a counter per CPU that starts at a
 * random value (a bijection of the counter, so one CPU never repeats itself
 * before 2^64 ids; across CPUs and hosts, as random as the starts). The add
 * is atomic: a program in softirq may take an id on this CPU in the middle
 * of another's. About 40 ns less than two bpf_get_prandom_u32 calls.
 */
static __always_inline __u64 new_id(void)
{
	__u32 zero = 0;
	__u64 *ctr = bpf_map_lookup_elem(&id_gen, &zero);
	__u64 z;

	if (!ctr)
		z = ((__u64)bpf_get_prandom_u32() << 32) | bpf_get_prandom_u32();
	else {
		if (!*ctr)	/* this CPU's first id */
			__sync_val_compare_and_swap(ctr, 0, ((__u64)bpf_get_prandom_u32() << 32) | bpf_get_prandom_u32() | 1);
		z = __sync_fetch_and_add(ctr, CW_GOLDEN) + CW_GOLDEN;
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
		z ^= z >> 31;
	}
	z &= CW_EVENT_ID_MASK;
	return z ? z : 1;
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
	task = bpf_get_current_task_btf();
	/* Two loads, where bpf_get_current_comm() costs a helper call and a strscpy (~60 ns). */
	__builtin_memcpy(e->comm, task->comm, sizeof(e->comm));
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
