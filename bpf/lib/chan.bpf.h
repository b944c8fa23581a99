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
#define POS_HEAD_ONE (1ULL << 32)	/* one segment in cw_chan.pos */

/* Loads and stores that the compiler makes once, where written (other CPUs read them). */
#define LOAD_ONCE(x) (*(volatile typeof(x) *)&(x))
#define STORE_ONCE(x, v) (*(volatile typeof(x) *)&(x) = (v))
#define cw_barrier() asm volatile("" ::: "memory")

extern struct task_struct *bpf_task_from_pid(s32 pid) __ksym;
extern void bpf_task_release(struct task_struct *p) __ksym;

/* a - b, in the channel's offset space: every kind wraps at 32 bits (TCP: sequence numbers). */
static __always_inline __s64 off_diff(const struct cw_chan *ch, __u64 a, __u64 b)
{
	return (__s32)((__u32)a - (__u32)b);
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

/*
 * What a new channel entry says of itself (events name the channel from it).
 * Its maker does this just after inserting it; a thread on another CPU that
 * finds it before then does it too, so that its events name the channel.
 */
static __always_inline void chan_name(struct cw_chan *ch, struct cw_io *io, __u32 kind)
{
	ch->inst = (__u64)io->inst;
	ch->key = io->key;
	ch->sotype = io->sotype;
	if (kind == CW_CHAN_UNIX && !ch->kind)
		unix_name(ch->name, io->peer, io->sk);
	ch->kind = kind;
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
				ch->pos = 0;
				ch->rd = 0;
				ch->writer = 0;
				for (int i = 0; i < CW_SEGS; i++)
					ch->seg[i].seq = 0;	/* the old instance's segments are gone */
				ch->flags = 0;
				ch->inst = (__u64)io->inst;
				ch->inst_head = 0;
			}
			if (io->inst_head > ch->inst_head)
				ch->inst_head = io->inst_head;
		}
		if (!ch->kind)	/* made by a thread on another CPU that has not named it yet */
			chan_name(ch, io, kind);
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
	if (ch && (!ch->kind || ch->key.dev != io->key.dev))
		chan_name(ch, io, kind);
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

/*
 * Fills the slot of segment index h, which the caller reserved (or, to
 * replace an empty last segment, holds alone): from offset start on, rec.
 * Readers take a slot only once its seq names its index: seq is cleared
 * first and written last (x86 keeps store order; the barriers keep the
 * compiler's).
 */
static __always_inline void seg_fill(struct cw_chan *ch, __u32 h, __u64 start, const struct cw_record *rec)
{
	struct cw_seg *s = &ch->seg[h & SEG_MASK];
	__u32 old = LOAD_ONCE(s->seq), seq;
	struct cw_seg *next;
	__u64 end;

	/* A writer held up for longer than CW_SEGS other segments took: its slot is a newer one's now. */
	if ((__u32)(LOAD_ONCE(ch->head) - h) > CW_SEGS) {
		count(CW_C_SEG_OVERWRITE, 1);
		return;
	}
	/*
	 * The slot's previous segment (index h - CW_SEGS) is lost if some of its
	 * bytes are unread: it ends where the next index starts. That slot may be
	 * being refilled by the writer that reserved after this one: its start
	 * counts only if its seq names the next index before and after the load
	 * (else: the old segment is lost if its own first byte is unread). Only a
	 * tracked reader keeps rd: without one, nobody would have read it anyway.
	 */
	if (old && old == h - CW_SEGS + 1 && (ch->flags & CW_CHF_READ)) {
		next = &ch->seg[(h + 1) & SEG_MASK];
		seq = LOAD_ONCE(next->seq);
		cw_barrier();
		end = next->start;
		cw_barrier();
		if (seq != h - CW_SEGS + 2 || LOAD_ONCE(next->seq) != seq)
			end = s->start + 1;
		if (off_diff(ch, end, ch->rd) > 0)
			count(CW_C_SEG_OVERWRITE, 1);
	}
	STORE_ONCE(s->seq, 0);
	cw_barrier();
	s->start = start;
	s->rec = *rec;
	cw_barrier();
	STORE_ONCE(s->seq, h + 1);
}

/*
 * Bytes at offset start on will carry rec: append a segment, or replace the
 * last one if it is empty. For publishers that the kernel serialises (TCP,
 * under the socket lock) or that are rare (minting); writers of pipes, FIFOs
 * and UNIX sockets use chan_write_enter. Returns the slot.
 */
static __always_inline struct cw_seg *seg_publish(struct cw_chan *ch, const struct cw_record *rec, __u64 start)
{
	__u32 h = ch->head;
	struct cw_seg *s;

	if (h) {
		s = &ch->seg[(h - 1) & SEG_MASK];
		if (LOAD_ONCE(s->seq) == h && s->start == start) {	/* the last segment is empty: replace it */
			seg_fill(ch, h - 1, start, rec);
			return s;
		}
	}
	h = __sync_fetch_and_add(&ch->pos, POS_HEAD_ONE) >> 32;
	seg_fill(ch, h, start, rec);
	return &ch->seg[h & SEG_MASK];
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
	__u64 start, event_id;
	__u8 version, prio;
	struct cw_seg *s;
	__u32 idx, seq;

	if (i >= w->head)
		return 1;
	idx = (w->head - 1 - i) & SEG_MASK;
	s = &ch->seg[idx];
	/*
	 * Not segment head - 1 - i (yet): reserved and not filled, so its writer
	 * is still in sys_enter and none of its bytes can be here; or refilled by
	 * a newer segment since, or while it was read here (the old one was
	 * counted as overwritten).
	 */
	seq = LOAD_ONCE(s->seq);
	if (seq != w->head - i)
		return 0;
	cw_barrier();
	start = s->start;
	version = s->rec.version;
	prio = s->rec.priority;
	event_id = s->rec.event_id;
	cw_barrier();
	if (LOAD_ONCE(s->seq) != seq)
		return 0;
	if (off_diff(ch, start, w->rd1) >= 0 || start == w->newer_start) {
		w->newer_start = start;	/* written after, or empty */
		return 0;
	}
	w->newer_start = start;
	if (version) {	/* version 0: the record was destroyed, the bytes carry none */
		if (w->found == 0 || prio > w->best_prio) {
			w->best = idx;
			w->best_prio = prio;
		}
		if (w->found == 0)
			w->newest = idx;
		w->oldest = idx;
		if (w->found < CW_MAX_PARENTS)
			w->parents[w->found & (CW_MAX_PARENTS - 1)] = event_id;
		w->found++;
	}
	if (off_diff(ch, start, w->rd0) <= 0) {
		w->covered = version != 0;
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

/* The record of a writer's new segment: a new segment is a send event, whose id is minted here. */
static __always_inline void send_record(struct cw_task *t, struct cw_record *rec)
{
	*rec = t->rec;
	if (sampled(rec)) {
		rec->event_id = new_id();
		t->send_ev = rec->event_id;
		t->send_parent = t->rec.event_id;
		t->send_ts = bpf_ktime_get_boot_ns();	/* before any reader can see the bytes */
	}
}

/* Before a TCP write at sequence number start (socket locked): the new segment, or NULL if it extends the last one. */
static __always_inline struct cw_seg *write_enter(struct cw_task *t, struct cw_chan *ch, __u64 start)
{
	struct cw_record rec;
	__u32 head = ch->head;
	struct cw_seg *s;

	t->send_ev = 0;
	/* Consecutive writes under one record extend its segment: no event. */
	if (head) {
		s = &ch->seg[(head - 1) & SEG_MASK];
		if (LOAD_ONCE(s->seq) == head && same_record(&s->rec, &t->rec))
			return NULL;
	}
	send_record(t, &rec);
	return seg_publish(ch, &rec, start);
}

enum seg_use {
	SEG_APPEND,	/* a new segment */
	SEG_EXTEND,	/* the last segment carries the same record: it goes on */
	SEG_REPLACE,	/* the last segment is empty (it starts where the write does): its record changes */
};

/* What a write reserving at pos (a value of cw_chan.pos) may do with the channel's last segment. */
static __always_inline enum seg_use seg_last_use(struct cw_chan *ch, __u64 pos, const struct cw_record *rec, bool may_replace)
{
	__u32 h = pos >> 32;
	struct cw_seg *s;

	if (!h)
		return SEG_APPEND;
	s = &ch->seg[(h - 1) & SEG_MASK];
	if (LOAD_ONCE(s->seq) != h)
		return SEG_APPEND;	/* reserved by a writer that has not filled it yet */
	cw_barrier();
	if (same_record(&s->rec, rec))
		return SEG_EXTEND;
	if (may_replace && (__u32)s->start == (__u32)pos)
		return SEG_REPLACE;
	return SEG_APPEND;
}

/*
 * A write of adv units (0: not known before the syscall returns) to a pipe,
 * FIFO or UNIX socket, before its bytes can be read: reserves its offsets
 * and, unless it extends or replaces the last segment, a new segment's slot,
 * in one atomic step on ch->pos; then fills the slot. Extending or replacing
 * decides on the last segment and reserves with a compare-and-swap of the
 * position that decision saw: if another writer reserved in between, it
 * decides again (a few times, then appends). A write of 0 units replaces
 * nothing: its compare-and-swap would not tell another replacer that the
 * slot is being rewritten.
 */
static __always_inline void chan_write_enter(struct cw_task *t, struct cw_chan *ch, __u32 adv)
{
	enum seg_use use = SEG_APPEND;
	struct cw_record rec;
	__u64 pos = 0, want;
	int i;

	t->send_ev = 0;
	for (i = 0; i < 4; i++) {
		pos = LOAD_ONCE(ch->pos);
		use = seg_last_use(ch, pos, &t->rec, adv != 0);
		if (use == SEG_APPEND)
			break;
		want = (pos & ~0xffffffffULL) | (__u32)((__u32)pos + adv);
		if (__sync_val_compare_and_swap(&ch->pos, pos, want) == pos)
			break;
		use = SEG_APPEND;	/* another writer reserved meanwhile */
	}
	if (use == SEG_EXTEND)
		return;
	if (use == SEG_APPEND)
		pos = __sync_fetch_and_add(&ch->pos, POS_HEAD_ONE + adv);
	else
		pos -= POS_HEAD_ONE;	/* replace: the last segment's index */
	send_record(t, &rec);
	seg_fill(ch, pos >> 32, (__u32)pos, &rec);
}

/* Whether thread tid is in a write syscall to the channel key (its task storage says so until its sys_exit). */
static __always_inline bool writer_in_flight(__u32 tid, const struct cw_chan_key *key)
{
	struct task_struct *task = bpf_task_from_pid(tid);
	struct cw_task *o;
	bool busy;

	if (!task)
		return false;
	o = bpf_task_storage_get(&tasks, task, NULL, 0);
	busy = o && o->op == CW_OP_WRITE && o->out.id == key->id && o->out.dev == key->dev &&
	       o->out.kind == key->kind && o->out.gen == key->gen;
	bpf_task_release(task);
	return busy;
}

/*
 * The current thread, tid, enters a write to ch (its t->op and t->out already
 * say so): if the thread that entered a write here last is another one, still in
 * its syscall, they race. Offsets are reserved at sys_enter, and the kernel
 * orders the bytes later (pipe mutex, socket lock): theirs may land in the
 * other order. One load and compare while one thread writes a channel.
 */
static __always_inline void writer_note(struct cw_chan *ch, const struct cw_chan_key *key, __u32 tid)
{
	__u32 prev = LOAD_ONCE(ch->writer);

	if (prev == tid)
		return;
	STORE_ONCE(ch->writer, tid);
	if (prev && writer_in_flight(prev, key))
		count(CW_C_WRITERS_RACED, 1);
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
