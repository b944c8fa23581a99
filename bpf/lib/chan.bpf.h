/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Channels: which record each run of bytes carries. Writers publish a segment
 * ("from offset N on, record R") before their bytes can be read; readers find
 * the segments that cover what they read. Needs the maps chans, chan_zero,
 * sk_out, sk_in and the helpers of events.bpf.h and fd.bpf.h.
 */
#ifndef CW_CHAN_BPF_H
#define CW_CHAN_BPF_H

#define SEG_MASK (CW_SEGS - 1)

/* a - b, in the channel's offset space (TCP sequence numbers wrap at 32 bits). */
static __always_inline __s64 off_diff(const struct cw_chan *ch, __u64 a, __u64 b)
{
	if (ch->kind == CW_CHAN_TCP)
		return (__s32)((__u32)a - (__u32)b);
	return (__s64)(a - b);
}

/* Adds an entry to chans; counts a full table. */
static __always_inline long chan_insert(const struct cw_chan_key *key, const struct cw_chan *init)
{
	long err = bpf_map_update_elem(&chans, key, init, BPF_NOEXIST);

	/* EEXIST: another thread made it first, which is fine. */
	if (err == -7 /* E2BIG */ || err == -12 /* ENOMEM */)
		count(CW_C_CHAN_FULL, 1);
	else if (!err)
		count(CW_C_CHAN_NEW, 1);
	return err;
}

/* The pipe, FIFO or UNIX channel written or read through io, created on first use. */
static __always_inline struct cw_chan *chan_get(struct cw_io *io, __u32 kind)
{
	struct cw_chan *ch = bpf_map_lookup_elem(&chans, &io->key);
	struct cw_chan_key early = {};
	__u32 zero = 0;

	if (ch) {
		/*
		 * A FIFO's bytes die when its last reader and writer close it; a
		 * reopened FIFO is a new pipe instance whose offsets start anew. A
		 * new instance at the old one's address shows by its head counter,
		 * which starts again from 0 (in one instance it only grows, so a
		 * live one never shows 0 again once it showed more).
		 */
		if (kind == CW_CHAN_FIFO) {
			if (ch->inst != (__u64)io->inst || (!io->inst_head && ch->inst_head)) {
				ch->wr = ch->rd = 0;
				ch->head = 0;
				ch->flags = 0;
				ch->inst = (__u64)io->inst;
				ch->inst_head = 0;
			}
			if (io->inst_head > ch->inst_head)
				ch->inst_head = io->inst_head;
		}
		return ch;
	}
	ch = NULL;
	if (kind == CW_CHAN_UNIX && io->key.dev) {
		/* Bytes written before the accept: their channel moves to the inode's key. */
		unix_early_key(io->recv, &early);
		ch = bpf_map_lookup_elem(&chans, &early);
	}
	if (ch) {
		if (!chan_insert(&io->key, ch))
			bpf_map_delete_elem(&chans, &early);
	} else {
		ch = bpf_map_lookup_elem(&chan_zero, &zero);	/* too big for the stack */
		if (!ch)
			return NULL;
		chan_insert(&io->key, ch);
	}
	ch = bpf_map_lookup_elem(&chans, &io->key);
	if (ch && (!ch->kind || ch->key.dev != io->key.dev)) {
		ch->inst = (__u64)io->inst;
		ch->key = io->key;
		ch->sotype = io->sotype;
		if (kind == CW_CHAN_UNIX && !ch->kind)
			unix_name(ch->name, io->peer, io->sk);
		ch->kind = kind;
	}
	return ch;
}

/*
 * A TCP socket's channel in one direction: sk_out holds what its writers
 * published, sk_in what the peer's options announced. Socket-local storage:
 * it dies with the socket, so a socket that reuses an address or a 4-tuple
 * starts clean.
 */
static __always_inline struct cw_chan *tcp_chan(void *map, struct sock *sk, bool egress, bool create)
{
	struct cw_chan *ch = bpf_sk_storage_get(map, sk, NULL, 0);
	struct cw_tcp_key *k;

	if (ch || !create)
		return ch;
	ch = bpf_sk_storage_get(map, sk, NULL, BPF_SK_STORAGE_GET_F_CREATE);
	if (!ch) {
		count(CW_C_SK_NOMEM, 1);
		return NULL;
	}
	if (!ch->kind) {
		k = &ch->tcp;
		if (egress)
			tcp_addrs(sk, k->saddr, k->daddr);
		else
			tcp_addrs(sk, k->daddr, k->saddr);
		k->sport = egress ? sk->__sk_common.skc_num : bpf_ntohs(sk->__sk_common.skc_dport);
		k->dport = egress ? bpf_ntohs(sk->__sk_common.skc_dport) : sk->__sk_common.skc_num;
		if (egress) {
			struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);

			/* rd: sent so far, so that a record overwritten before its option left is counted. */
			ch->rd = tp ? tp->snd_nxt : 0;
			ch->flags |= CW_CHF_READ;
		}
		ch->kind = CW_CHAN_TCP;
	}
	return ch;
}

/* Bytes about to be written at offset start will carry rec: append a segment. */
static __always_inline void seg_publish(struct cw_chan *ch, const struct cw_record *rec, __u64 start)
{
	__u32 head = ch->head;
	struct cw_seg *s;

	if (head) {
		s = &ch->seg[(head - 1) & SEG_MASK];
		if (s->start == start) {	/* the last segment is empty: replace it */
			s->rec = *rec;
			return;
		}
	}
	if (head >= CW_SEGS) {
		/* The slot to reuse is the oldest; lost if its bytes are unread. */
		struct cw_seg *next = &ch->seg[(head + 1) & SEG_MASK];

		/* Only a tracked reader keeps rd: without one, nobody would have read the segment anyway. */
		if ((ch->flags & CW_CHF_READ) && off_diff(ch, next->start, ch->rd) > 0)
			count(CW_C_SEG_OVERWRITE, 1);
	}
	s = &ch->seg[head & SEG_MASK];
	s->start = start;
	s->rec = *rec;
	asm volatile("" ::: "memory");	/* publish the segment before the head (x86 keeps store order) */
	ch->head = head + 1;
}

/* The first read of bytes with no record in ch: tell user space once (actors may mint there). */
static __always_inline void ingress_once(struct cw_task *t, struct cw_chan *ch, __u64 n)
{
	struct cw_event *e;

	if (ch->flags & CW_CHF_INGRESS)
		return;
	ch->flags |= CW_CHF_INGRESS;
	if (!sampled(&t->rec))
		return;
	/* A branch off the reader's chain: reading bytes without a record adopts nothing. */
	e = ev_start(CW_EV_INGRESS, &t->rec);
	if (!e)
		return;
	e->rec.event_id = new_id();
	e->nparents = 1;
	e->parents[0] = t->rec.event_id;
	ev_channel(e, ch, false);
	e->bytes = n;
	ev_submit(e);
}

/* The state of one walk over a channel's segments (bpf_loop callback context). */
struct seg_walk {
	struct cw_chan *ch;
	__u64 rd0, rd1, newer_start;
	__u64 parents[CW_MAX_PARENTS];	/* newest first */
	__u32 head, found, newest, oldest, best;
	__u8 best_prio;
	bool covered;
};

/*
 * One step back from the newest segment: i-th newest. Returns 1 to stop at
 * the segment holding unit rd0. A callback, so that the verifier checks the
 * walk once instead of every path through sixteen unrolled steps.
 */
static long seg_walk_step(__u32 i, struct seg_walk *w)
{
	struct cw_chan *ch = w->ch;
	struct cw_seg *s;
	__u32 idx;

	if (i >= w->head)
		return 1;
	idx = (w->head - 1 - i) & SEG_MASK;
	s = &ch->seg[idx];
	if (off_diff(ch, s->start, w->rd1) >= 0 || s->start == w->newer_start) {
		w->newer_start = s->start;	/* written after, or empty */
		return 0;
	}
	w->newer_start = s->start;
	if (s->rec.version) {	/* version 0: the record was destroyed, the bytes carry none */
		if (w->found == 0 || s->rec.priority > w->best_prio) {
			w->best = idx;
			w->best_prio = s->rec.priority;
		}
		if (w->found == 0)
			w->newest = idx;
		w->oldest = idx;
		if (w->found < CW_MAX_PARENTS)
			w->parents[w->found & (CW_MAX_PARENTS - 1)] = s->rec.event_id;
		w->found++;
	}
	if (off_diff(ch, s->start, w->rd0) <= 0) {
		w->covered = s->rec.version != 0;
		return 1;
	}
	return 0;
}

/* Which found segment a join adopts (enum cw_join_rule, from the policy map). */
static __always_inline __u32 join_pick(const struct seg_walk *w)
{
	__u32 zero = 0;
	struct cw_policy *p = bpf_map_lookup_elem(&policy, &zero);

	if (!p || p->join_rule == CW_JOIN_LAST)
		return w->newest;
	return p->join_rule == CW_JOIN_FIRST ? w->oldest : w->best;
}

/*
 * The current thread read units [rd0, rd0 + n) of ch: adopt the record that
 * the join rule picks among the segments they span (the last by default),
 * and name every one of them.
 */
static __always_inline void chan_read(struct cw_task *t, struct cw_chan *ch, __u64 rd0, __u64 n)
{
	struct seg_walk w = { .ch = ch, .rd0 = rd0, .rd1 = rd0 + n, .newer_start = ~0ULL, .head = ch->head };
	struct cw_event *e;
	struct cw_seg *s;
	__u32 found, i;

	if (!(ch->flags & CW_CHF_READ))
		ch->flags |= CW_CHF_READ;
	bpf_loop(CW_SEGS, seg_walk_step, &w, 0);
	if (!w.covered) {
		count(CW_C_INGRESS, 1);
		ingress_once(t, ch, n);
	}
	found = w.found;
	if (!found)
		return;
	count(CW_C_RECVS, 1);
	if (found > CW_MAX_PARENTS)
		count(CW_C_PARENTS_TRUNC, 1);
	s = &ch->seg[(found > 1 ? join_pick(&w) : w.newest) & SEG_MASK];
	if (found == 1 && s->rec.event_id == t->src)
		return;	/* still reading the run of bytes adopted last time */

	t->rec = s->rec;
	t->src = s->rec.event_id;
	if (sampled(&t->rec))
		t->rec.event_id = new_id();
	sdk_publish(t);
	sched_note(t);
	if (!sampled(&t->rec))
		return;
	e = ev_start(found > 1 ? CW_EV_JOIN : CW_EV_RECV, &t->rec);
	if (!e)
		return;
	ev_channel(e, ch, false);
	e->bytes = n;
	if (!w.covered)
		e->flags |= CW_EVF_INGRESS;
	/* Parents oldest first. */
	found = found > CW_MAX_PARENTS ? CW_MAX_PARENTS : found;
	e->nparents = found;
	for (i = 0; i < CW_MAX_PARENTS; i++)
		if (i < found)
			e->parents[i] = w.parents[(found - 1 - i) & (CW_MAX_PARENTS - 1)];
	ev_submit(e);
}

/* Before a write at offset start: make the bytes carry the thread's record. */
static __always_inline void write_enter(struct cw_task *t, struct cw_chan *ch, __u64 start)
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
	seg_publish(ch, &rec, start);
}

/* After a write of n > 0 units: the send event of a new segment, for the caller to name and submit. */
static __always_inline struct cw_event *send_event(struct cw_task *t, __u64 n)
{
	struct cw_event *e;

	count(CW_C_SENDS, 1);
	if (!t->send_ev)
		return NULL;
	t->rec.event_id = t->send_ev;
	t->send_ev = 0;
	e = ev_start(CW_EV_SEND, &t->rec);
	if (!e)
		return NULL;
	e->ts = t->send_ts;
	e->bytes = n;
	e->nparents = 1;
	e->parents[0] = t->send_parent;
	return e;
}

static __always_inline void write_exit(struct cw_task *t, struct cw_chan *ch, __u64 n)
{
	struct cw_event *e = send_event(t, n);

	if (!e)
		return;
	ev_channel(e, ch, true);
	ev_submit(e);
}

/* After a TCP write of n > 0 bytes: the connection is named from the task (no socket at sys_exit). */
static __always_inline void tcp_write_exit(struct cw_task *t, __u64 n)
{
	struct cw_event *e = send_event(t, n);

	if (!e)
		return;
	ev_tcp(e, &t->tcp, true);
	ev_submit(e);
}

#endif /* CW_CHAN_BPF_H */
