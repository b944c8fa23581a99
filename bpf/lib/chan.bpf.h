/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Channels: which record each run of bytes carries. Writers publish a segment
 * ("from offset N on, record R") before their bytes can be read; readers find
 * the segments that cover what they read. Needs the maps chans, tcp_chans,
 * chan_zero and the helpers of events.bpf.h.
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

static __always_inline struct cw_chan *chan_new(void *map, const void *key)
{
	__u32 zero = 0;
	struct cw_chan *init = bpf_map_lookup_elem(&chan_zero, &zero);

	if (!init)
		return NULL;
	/* EEXIST means another thread created it first, which is fine. */
	if (bpf_map_update_elem(map, key, init, BPF_NOEXIST) == -7 /* E2BIG */)
		count(CW_C_CHAN_FULL, 1);
	return bpf_map_lookup_elem(map, key);
}

/* The channel written through io, created on first use. */
static __always_inline struct cw_chan *chan_get(struct cw_io *io, __u32 kind)
{
	struct cw_chan *ch;

	if (kind == CW_CHAN_TCP) {
		ch = bpf_map_lookup_elem(&tcp_chans, &io->tcp);
		if (ch)
			return ch;
		ch = chan_new(&tcp_chans, &io->tcp);
		if (ch && !ch->kind) {
			ch->tcp = io->tcp;
			ch->kind = CW_CHAN_TCP;
		}
		return ch;
	}
	ch = bpf_map_lookup_elem(&chans, &io->key);
	if (ch)
		return ch;
	ch = chan_new(&chans, &io->key);
	if (ch && !ch->kind) {
		ch->key = io->key;
		ch->sotype = io->sotype;
		if (kind == CW_CHAN_UNIX)
			unix_name(ch->name, io->peer, io->sk);
		ch->kind = kind;
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

		if (off_diff(ch, next->start, ch->rd) > 0)
			count(CW_C_SEG_OVERWRITE, 1);
	}
	s = &ch->seg[head & SEG_MASK];
	s->start = start;
	s->rec = *rec;
	asm volatile("" ::: "memory");	/* publish the segment before the head (x86 keeps store order) */
	ch->head = head + 1;
}

/*
 * The current thread read units [rd0, rd0 + n) of ch: adopt the record of the
 * last of them; name every segment they span.
 */
static __always_inline void chan_read(struct cw_task *t, struct cw_chan *ch, __u64 rd0, __u64 n)
{
	__u64 rd1 = rd0 + n, newer_start = ~0ULL;
	__u64 parents[CW_MAX_PARENTS] = {};
	__u32 head = ch->head, found = 0, newest = 0, i;
	bool covered = false;
	struct cw_event *e;
	struct cw_seg *s;

	/* Walk from the newest segment back to the one holding unit rd0. */
	for (i = 0; i < CW_SEGS; i++) {
		__u32 idx;

		if (i >= head)
			break;
		idx = (head - 1 - i) & SEG_MASK;
		s = &ch->seg[idx];
		if (off_diff(ch, s->start, rd1) >= 0 || s->start == newer_start) {
			newer_start = s->start;	/* written after, or empty */
			continue;
		}
		newer_start = s->start;
		if (found == 0)
			newest = idx;
		if (found < CW_MAX_PARENTS)
			parents[found] = s->rec.event_id;
		found++;
		if (off_diff(ch, s->start, rd0) <= 0) {
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
	ev_channel(e, ch, false);
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

/* After a write of n > 0 units: report a new segment's send event. */
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
	ev_channel(e, ch, true);
	e->ts = t->send_ts;
	e->bytes = n;
	e->nparents = 1;
	e->parents[0] = t->send_parent;
	ev_submit(e);
}

#endif /* CW_CHAN_BPF_H */
