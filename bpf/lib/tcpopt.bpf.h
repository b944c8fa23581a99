/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The record across hosts: a TCP header option written by sockops on data
 * segments where a record starts and parsed on the receiving side, on one
 * host as between hosts (layout in causeway.h). Needs sk_out, sk_in,
 * trusted_nets, cw_opt_kind, cw_opt_exid and chan.bpf.h. Whether a peer is
 * trusted is decided once per socket and direction.
 */
#ifndef CW_TCPOPT_BPF_H
#define CW_TCPOPT_BPF_H

#define ENOSPC 28

/* The connection's addresses from the sockops context, IPv4 as IPv4-mapped IPv6. */
static __always_inline void skops_addrs(struct bpf_sock_ops *skops, __u8 *local, __u8 *remote)
{
	if (skops->family == AF_INET) {
		__u32 l = skops->local_ip4, r = skops->remote_ip4;

		/* Keep both as loaded values: sockops may not read its context at a computed offset. */
		asm volatile("" : "+r"(l), "+r"(r));
		v4_mapped(local, l);
		v4_mapped(remote, r);
	} else {
		__u32 l[4] = { skops->local_ip6[0], skops->local_ip6[1], skops->local_ip6[2], skops->local_ip6[3] };
		__u32 r[4] = { skops->remote_ip6[0], skops->remote_ip6[1], skops->remote_ip6[2], skops->remote_ip6[3] };

		__builtin_memcpy(local, l, 16);
		__builtin_memcpy(remote, r, 16);
	}
}

/* The channel key of the data this connection sends (egress) or receives. */
static __always_inline void skops_key(struct bpf_sock_ops *skops, bool egress, struct cw_tcp_key *k)
{
	__u8 local[16], remote[16];
	/* remote_port holds the network-order port in its upper half on little-endian hosts */
	__u16 lport = skops->local_port, rport = bpf_ntohl(skops->remote_port);

	skops_addrs(skops, local, remote);
	if (egress) {
		__builtin_memcpy(k->saddr, local, 16);
		__builtin_memcpy(k->daddr, remote, 16);
		k->sport = lport;
		k->dport = rport;
	} else {
		__builtin_memcpy(k->saddr, remote, 16);
		__builtin_memcpy(k->daddr, local, 16);
		k->sport = rport;
		k->dport = lport;
	}
	k->pad = 0;
}

/* Whether the connection's peer is in a trusted network (for a connection with no channel yet). */
static __always_inline bool peer_trusted(struct bpf_sock_ops *skops)
{
	struct cw_lpm_key k = { .prefixlen = 128 };
	__u8 local[16];

	skops_addrs(skops, local, k.addr);
	return bpf_map_lookup_elem(&trusted_nets, &k) != NULL;
}

static __always_inline bool has_actor_area(const struct cw_record *r)
{
	const __u64 *a = (const __u64 *)r->actor;

	return a[0] | a[1] | a[2] | a[3];
}

/* The key of a record's actor area: its event id, with trace id bits above the 48. */
static __always_inline __u64 actor_key(const struct cw_record *r)
{
	return r->event_id | (__u64)*(const __u16 *)&r->trace_id[14] << 48;
}

static __always_inline void actor_area_keep(const struct cw_record *r)
{
	__u64 key = actor_key(r);

	bpf_map_update_elem(&actor_areas, &key, r->actor, BPF_ANY);
}

/* Whether the peer of this channel is trusted: one LPM lookup per channel and direction. */
static __always_inline bool chan_trusted(struct cw_chan *ch, bool egress)
{
	__u8 known = egress ? CW_TRUST_OUT_KNOWN : CW_TRUST_IN_KNOWN;
	__u8 yes = egress ? CW_TRUST_OUT : CW_TRUST_IN;
	struct cw_lpm_key k = { .prefixlen = 128 };

	if (!(ch->trust & known)) {
		__builtin_memcpy(k.addr, egress ? ch->tcp.daddr : ch->tcp.saddr, 16);
		ch->trust |= known | (bpf_map_lookup_elem(&trusted_nets, &k) ? yes : 0);
		/* Stripping on egress by destination port: decided once, like trust. */
		if (egress && bpf_map_lookup_elem(&egress_strip, &ch->tcp.dport))
			ch->trust = (ch->trust & ~yes) | CW_TRUST_OUT_STRIPPED;
	}
	return ch->trust & yes;
}

/*
 * The record to announce on a segment [start, end): the newest segment that
 * starts before end, if it starts inside [start, end) (a record that started
 * on an earlier segment was announced there). *split: an older record covers
 * the segment's first bytes.
 */
static __always_inline struct cw_seg *seg_starting(struct cw_chan *ch, __u32 start, __u32 end, bool *split)
{
	__u32 head = ch->head, i;
	struct cw_seg *s;

	*split = false;
	for (i = 0; i < CW_SEGS; i++) {
		if (i >= head)
			return NULL;
		s = &ch->seg[(head - 1 - i) & SEG_MASK];
		if (s->seq != head - i)
			continue;	/* not filled (the sender holds the socket lock: only if a fill was cut short) */
		if ((__s32)((__u32)s->start - end) >= 0)
			continue;	/* written after this segment's bytes */
		if ((__s32)((__u32)s->start - start) < 0)
			return NULL;	/* this record started on an earlier segment */
		/* An older record covers the first bytes unless this one starts at the first byte. */
		*split = (__u32)s->start != start && i + 1 < head;
		return s;
	}
	return NULL;
}

/* The sequence number and payload length of the segment in skb_data; false if it has no payload. */
static __always_inline bool seg_header(struct bpf_sock_ops *skops, __u32 *seq, __u32 *len)
{
	struct tcphdr *th = (void *)(long)skops->skb_data;

	if ((void *)(th + 1) > (void *)(long)skops->skb_data_end)
		return false;
	*len = skops->skb_len - th->doff * 4;
	*seq = bpf_ntohl(th->seq);
	return *len > 0;
}

/*
 * HDR_OPT_LEN: reserve room while a record starts at or after the oldest
 * unacknowledged byte: its option may be on this segment, or on its
 * retransmission (the kernel builds the header later, so the segment's own
 * sequence number is not known here; WRITE_HDR_OPT checks it and leaves the
 * room to NOPs if no record starts on the segment). Once the record's start
 * is acknowledged, segments carry no option: the receiver keeps a record
 * until the next one. The kernel also asks with no segment at all
 * (tcp_flags 0) to size the MSS: reserve then on any connection that carries
 * records, or full-sized segments would outgrow the MTU.
 */
static __always_inline void opt_reserve(struct bpf_sock_ops *skops)
{
	bool mss_probe = skops->skb_tcp_flags == 0;
	struct bpf_sock *sk = skops->sk;
	struct cw_chan *ch;
	__u32 newest = 0;

	if (!sk || (skops->skb_tcp_flags & 0x02 /* SYN */))
		return;
	ch = bpf_sk_storage_get(&sk_out, sk, NULL, 0);
	if (!ch || !ch->head) {
		/*
		 * No record yet. The first one is published inside tcp_sendmsg,
		 * after it computed the mss that the whole send then keeps: if
		 * that mss left no room, the send's first full segment leaves
		 * CW_OPT_LEN bytes over the path's MTU once the option is written,
		 * is dropped, and goes again only after a retransmission timeout.
		 * So every mss of a connection to a trusted peer has room for it.
		 */
		if (mss_probe && peer_trusted(skops))
			bpf_reserve_hdr_opt(skops, CW_OPT_LEN, 0);
		return;
	}
	if (!mss_probe) {
		if (!skops->skb_len)
			return;	/* a pure ACK */
		if ((__s32)(skops->snd_nxt - (__u32)ch->rd) > 0)
			ch->rd = skops->snd_nxt;	/* sent so far */
		newest = ch->seg[(ch->head - 1) & SEG_MASK].start;
		if ((__s32)(newest - skops->snd_una) < 0)
			return;	/* every record's start is acknowledged */
	}
	if (!chan_trusted(ch, true)) {
		if (!mss_probe)
			count(ch->trust & CW_TRUST_OUT_STRIPPED ? CW_C_OPT_STRIPPED : CW_C_OPT_UNTRUSTED_OUT, 1);
		return;
	}
	/*
	 * No room (SACK blocks, TCP-MD5): a record is lost, counted once, on the
	 * first transmission of the segment that holds its first byte (new data
	 * starts at snd_nxt; a retransmission does not count it again).
	 */
	if (bpf_reserve_hdr_opt(skops, CW_OPT_LEN, 0) && !mss_probe &&
	    (__s32)(newest - skops->snd_nxt) >= 0 && (__s32)(newest - (skops->snd_nxt + skops->skb_len)) < 0)
		count(CW_C_OPT_NOSPACE, 1);
}

/* An option's first 4 bytes: kind, length, ExID. */
static __always_inline void opt_head(__u8 *opt, __u8 len)
{
	opt[0] = cw_opt_kind;
	opt[1] = len;
	opt[2] = cw_opt_exid >> 8;
	opt[3] = cw_opt_exid & 0xff;
}

/* WRITE_HDR_OPT: the record that starts in this segment (the last one, if several do). */
static __always_inline void opt_write(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	__u8 opt[CW_OPT_LEN];
	struct cw_chan *ch;
	struct cw_seg *s;
	__u32 seq, len;
	bool split;

	if (!sk || !seg_header(skops, &seq, &len))
		return;
	ch = bpf_sk_storage_get(&sk_out, sk, NULL, 0);
	if (!ch || !chan_trusted(ch, true))
		return;
	s = seg_starting(ch, seq, seq + len, &split);
	if (!s)
		return;
	if (split)
		count(CW_C_OPT_BOUNDARY, 1);
	opt_head(opt, CW_OPT_LEN);
	opt[4] = CW_OPT_VERSION << 4 | (s->rec.flags & CW_F_SAMPLED) |
		 (has_actor_area(&s->rec) ? CW_OPT_F_ACTOR : 0);
	opt[5] = s->rec.priority;
	__builtin_memcpy(&opt[6], s->rec.trace_id, 16);
	for (int i = 0; i < 6; i++)
		opt[22 + i] = s->rec.event_id >> (8 * (5 - i));
	if (bpf_store_hdr_opt(skops, opt, sizeof(opt), 0))
		count(CW_C_OPT_NOSPACE, 1);
	else
		count(CW_C_OPT_WRITTEN, 1);
}

/* The receiving socket's channel, made on the first option; named from the sockops context. */
static __always_inline struct cw_chan *skops_in_chan(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	struct cw_chan *ch;

	if (!sk)
		return NULL;
	ch = bpf_sk_storage_get(&sk_in, sk, NULL, 0);
	if (ch)
		return ch;
	ch = bpf_sk_storage_get(&sk_in, sk, NULL, BPF_SK_STORAGE_GET_F_CREATE);
	if (!ch) {
		count(CW_C_SK_NOMEM, 1);
		return NULL;
	}
	if (!ch->kind) {
		skops_key(skops, false, &ch->tcp);
		ch->kind = CW_CHAN_TCP;
	}
	return ch;
}

/*
 * Whether the kernel will take this segment: PARSE_HDR_OPT_CB runs at the end
 * of tcp_validate_incoming() (sequence window, PAWS, RST and SYN checks
 * passed), and tcp_ack() runs right after it, with nothing in between, on the
 * same locked socket: tcp_rcv_established() (slow path; the fast path never
 * calls this hook) and tcp_rcv_state_process() both discard the segment,
 * data and all, when tcp_ack() returns < 0, which it does exactly when
 *   after(ack, snd_nxt)                                  (RFC 793 3.9), or
 *   before(ack, snd_una - min(max_window, bytes_acked))  (RFC 5961 5.2).
 * An ACK older than snd_una but within that window is accepted ("old_ack").
 * The values here are the ones tcp_ack() reads next. A segment without the
 * ACK bit (or with SYN or RST) never gets here on this kernel (discarded
 * before tcp_validate_incoming() or inside it); refused anyway.
 */
static __always_inline bool ack_acceptable(struct bpf_sock_ops *skops, const struct tcphdr *th)
{
	__u32 ack = bpf_ntohl(th->ack_seq), una = skops->snd_una;
	struct bpf_sock *sk;
	struct tcp_sock *tp;
	__u64 win;

	if (!th->ack || th->syn || th->rst)
		return false;
	if ((__s32)(ack - skops->snd_nxt) > 0)
		return false;	/* acknowledges bytes never sent */
	if ((__s32)(ack - una) >= 0)
		return true;	/* the usual case: one comparison more */
	/* Older than snd_una: max_window is not in bpf_sock_ops; read it through BTF. */
	sk = skops->sk;
	if (!sk)
		return false;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return false;
	win = tp->max_window;
	if (win > skops->bytes_acked)
		win = skops->bytes_acked;
	return (__s32)(ack - (una - (__u32)win)) >= 0;
}

#define CW_OPT_SPACE 40		/* bytes of TCP option space */
#define CW_OPT_BUF 96		/* a copy of them, zero-padded: an option's 28 bytes at any offset < 64 fit */

/* Copies the segment's options (a multiple of 4 bytes, at most 40) into buf, which is zeroed. */
static __always_inline void opt_copy(struct bpf_sock_ops *skops, const struct tcphdr *th, __u8 *buf)
{
	const __u8 *p = (const __u8 *)(th + 1), *end = (const __u8 *)(long)skops->skb_data_end;

	if (p + CW_OPT_SPACE <= end) {	/* a full header: what a segment with our option and timestamps has */
		__builtin_memcpy(buf, p, CW_OPT_SPACE);
		return;
	}
#pragma unroll
	for (int j = 0; j < CW_OPT_SPACE / 4; j++) {
		if (p + 4 * j + 4 > end)
			break;
		__builtin_memcpy(buf + 4 * j, p + 4 * j, 4);
	}
}

/* A walk over a segment's options (bpf_loop callback context). */
struct opt_walk {
	__u8 buf[CW_OPT_BUF];	/* the options, zero-padded */
	__u32 room;		/* their length */
	__u32 i;		/* the next option's offset */
	__u32 at;		/* where the first one of ours starts */
	__u32 n;		/* how many of ours */
};

/*
 * One option: counts it if it is ours (kind and ExID). Walks them as
 * tcp_parse_options() does: it stops at EOL, at a length under 2, and at an
 * option that runs past the header (the kernel parses no further either).
 * Returns 1 to stop. A callback, so that the verifier checks one step
 * instead of every path through 40 bytes of options.
 */
static long opt_walk_step(__u32 k, struct opt_walk *w)
{
	__u32 i = w->i, len;
	__u8 kind;

	if (i >= w->room)
		return 1;
	i &= 63;
	kind = w->buf[i];
	if (kind == 0)		/* EOL */
		return 1;
	if (kind == 1) {	/* NOP */
		w->i = i + 1;
		return 0;
	}
	len = w->buf[i + 1];
	if (len < 2 || i + len > w->room)
		return 1;
	if (len >= 4 && kind == cw_opt_kind && w->buf[i + 2] == (__u8)(cw_opt_exid >> 8) &&
	    w->buf[i + 3] == (__u8)cw_opt_exid) {
		if (!w->n)
			w->at = i;
		w->n++;
	}
	w->i = i + len;
	return 0;
}

/*
 * PARSE_HDR_OPT: a record from a peer, from this segment's first byte on.
 * Only segments that carry an option unknown to the kernel get here. Each
 * option of ours is either taken (tcpOptionsReceived), a retransmission of
 * the record held (not counted), or rejected under one reason, checked in
 * this order: the segment's ACK makes the kernel discard it (tcpOptionBadAck),
 * the peer is not trusted (tcpOptionUntrustedIn), the segment holds more than
 * one option of ours (tcpOptionDuplicate: none is taken), the option is not a
 * record (tcpOptionMalformed), or it names older bytes (tcpOptionStale).
 */
static __always_inline void opt_parse(struct bpf_sock_ops *skops)
{
	struct tcphdr *th = (void *)(long)skops->skb_data;
	struct opt_walk w = {};
	struct cw_record rec = {};
	struct cw_chan *ch;
	struct cw_seg *last;
	__u32 seq;
	__u8 *o;

	if ((void *)(th + 1) > (void *)(long)skops->skb_data_end)
		return;
	w.room = th->doff * 4 - sizeof(*th);
	if (w.room > CW_OPT_SPACE)
		w.room = CW_OPT_SPACE;
	opt_copy(skops, th, w.buf);
	/*
	 * Every option of ours, not just the first: bpf_load_hdr_opt() returns
	 * only the first match, so a second one in the segment would go unseen.
	 */
	bpf_loop(CW_OPT_SPACE, opt_walk_step, &w, 0);	/* every option takes at least a byte */
	if (!w.n)
		return;	/* not ours */
	if (!ack_acceptable(skops, th)) {
		count(CW_C_OPT_BAD_ACK, 1);	/* before anything is made for this socket */
		return;
	}
	ch = skops_in_chan(skops);
	if (!ch)
		return;
	if (!chan_trusted(ch, false)) {
		count(CW_C_OPT_UNTRUSTED_IN, 1);
		return;
	}
	if (w.n > 1) {
		count(CW_C_OPT_DUPLICATE, 1);
		return;
	}
	o = w.buf + (w.at & 63);
	if (o[1] != CW_OPT_LEN || o[4] >> 4 != CW_OPT_VERSION || skops->skb_len <= th->doff * 4) {
		count(CW_C_OPT_MALFORMED, 1);	/* wrong length or version, or no bytes to name */
		return;
	}
	seq = bpf_ntohl(th->seq);
	rec.version = CW_RECORD_VERSION;
	rec.flags = o[4] & CW_OPT_F_SAMPLED;
	rec.priority = o[5];
	__builtin_memcpy(rec.trace_id, &o[6], 16);
	for (int i = 0; i < 6; i++)
		rec.event_id = rec.event_id << 8 | o[22 + i];
	if (!rec.event_id || !(*(__u64 *)&rec.trace_id[0] | *(__u64 *)&rec.trace_id[8])) {
		count(CW_C_OPT_MALFORMED, 1);	/* ids are never zero */
		return;
	}
	if (o[4] & CW_OPT_F_ACTOR) {
		__u64 key = actor_key(&rec);
		__u8 *area = bpf_map_lookup_elem(&actor_areas, &key);

		if (area)
			__builtin_memcpy(rec.actor, area, CW_ACTOR_BYTES);
		else
			count(CW_C_ACTOR_LOST, 1);	/* another host or run, or evicted */
	}
	if (ch->head) {
		last = &ch->seg[(ch->head - 1) & SEG_MASK];
		if (same_record(&last->rec, &rec))
			return;	/* a retransmission of what we have */
		if ((__s32)(seq - (__u32)last->start) < 0) {
			count(CW_C_OPT_STALE, 1);	/* a retransmission or reordering: keep what we have */
			return;
		}
	}
	count(CW_C_OPT_RECEIVED, 1);
	if (!ch->head || ch->seg[(ch->head - 1) & SEG_MASK].rec.priority != rec.priority)
		sched_arrival(ch, &rec);
	seg_publish(ch, &rec, seq);
}

#endif /* CW_TCPOPT_BPF_H */
