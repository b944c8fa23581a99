// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The network underneath (causeway trace --layers): tc programs on the
 * interfaces of a path that stamp the time a record's bytes enter each layer.
 *
 * A segment that starts a record carries causeway's TCP option (docs/tcp-option.md),
 * which names the sender's send event. These programs parse Ethernet -> IPv4/IPv6
 * -> TCP, also inside VXLAN (outer IPv4/IPv6, UDP to port 4789 or 8472, the
 * 8-byte VXLAN header, inner Ethernet), find the option, and record
 * bpf_ktime_get_boot_ns() under {event id, interface, direction}: the first
 * segment of the record wins (BPF_NOEXIST). They never change a packet and
 * always pass it on (TCX_NEXT). Nothing here runs in the shim's hot path: it
 * is its own object, loaded only with --layers.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "causeway.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Set through the skeleton's rodata before load (as the shim's). */
const volatile __u8 cw_opt_kind = 253;
const volatile __u16 cw_opt_exid = 0xc5a7;
const volatile __u16 cw_vxlan_port = 4789;	/* IANA */
const volatile __u16 cw_vxlan_port2 = 8472;	/* Linux's default, Flannel's */

#define TCX_NEXT -1
#define ETH_P_IP_ 0x0800
#define ETH_P_IPV6_ 0x86DD
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17

/* A stamp's key: the send event (48 bits, from the option), the interface (ifindex in its netns) and direction. */
struct cw_layer_key {
	__u64 event;
	__u32 ifindex;
	__u32 netns;		/* the network namespace's inode number */
	__u32 dir;		/* 0 ingress, 1 egress */
	__u32 pad;
};

#define CW_LAYER_ENCAP 1	/* seen inside a VXLAN packet */

struct cw_layer_stamp {
	__u64 ts;		/* CLOCK_BOOTTIME ns */
	__u32 flags;
	__u32 len;		/* skb->len: the packet (or GSO super-packet) as seen here */
	__u32 seq;		/* the segment's TCP sequence number */
	__u32 pad;
	__u8 trace[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct cw_layer_key);
	__type(value, struct cw_layer_stamp);
} layer_stamps SEC(".maps");

enum { LC_PACKETS, LC_OPTIONS, LC_STORED, LC_FULL, LC_MAX };

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LC_MAX);
	__type(key, __u32);
	__type(value, __u64);
} layer_counters SEC(".maps");

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

static __always_inline void count(__u32 k)
{
	__u64 *v = bpf_map_lookup_elem(&layer_counters, &k);

	if (v)
		(*v)++;
}

#define OPT_BUF 104	/* 40 bytes of options, zero-padded so that a 28-byte option at any offset < 64 fits */

static __always_inline void stamp(struct __sk_buff *skb, __u32 dir)
{
	__u8 buf[OPT_BUF] = {};
	struct ethhdr eth;
	struct tcphdr th;
	__u32 off = 0, flags = 0, optlen, i = 0, at = 0;
	__u8 l4 = 0;
	int level;

	count(LC_PACKETS);
	/* At most two levels: the packet, or the packet inside a VXLAN packet. */
	for (level = 0; level < 2; level++) {
		if (bpf_skb_load_bytes(skb, off, &eth, sizeof(eth)))
			return;
		off += sizeof(eth);
		if (eth.h_proto == bpf_htons(ETH_P_IP_)) {
			struct iphdr ip;

			if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) || ip.version != 4 || ip.ihl < 5)
				return;
			if (ip.frag_off & bpf_htons(0x3fff))	/* a fragment: no TCP header to read */
				return;
			off += ip.ihl * 4;
			l4 = ip.protocol;
		} else if (eth.h_proto == bpf_htons(ETH_P_IPV6_)) {
			struct ipv6hdr ip6;

			if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)))
				return;
			off += sizeof(ip6);
			l4 = ip6.nexthdr;
		} else {
			return;
		}
		if (l4 == IPPROTO_TCP_)
			break;
		if (l4 != IPPROTO_UDP_ || level > 0)
			return;
		{
			struct udphdr udp;
			__u16 port;

			if (bpf_skb_load_bytes(skb, off, &udp, sizeof(udp)))
				return;
			port = bpf_ntohs(udp.dest);
			if (port != cw_vxlan_port && port != cw_vxlan_port2)
				return;
		}
		off += sizeof(struct udphdr) + 8;	/* the VXLAN header */
		flags |= CW_LAYER_ENCAP;
	}
	if (l4 != IPPROTO_TCP_)
		return;
	if (bpf_skb_load_bytes(skb, off, &th, sizeof(th)))
		return;
	optlen = th.doff * 4;
	if (optlen < sizeof(th) + CW_OPT_LEN || optlen > sizeof(th) + 40)
		return;		/* no room for ours: nothing to look at */
	optlen -= sizeof(th);
	optlen &= 63;
	if (optlen < CW_OPT_LEN || optlen > 40)
		return;
	if (bpf_skb_load_bytes(skb, off + sizeof(th), buf, optlen))
		return;
	/* Walk the options as tcp_parse_options() does: stop at EOL, a length under 2, or one past the header. */
	for (int k = 0; k < 40; k++) {
		__u32 len;
		__u8 kind;

		if (i >= optlen)
			return;
		i &= 63;
		kind = buf[i];
		if (kind == 0)
			return;
		if (kind == 1) {
			i++;
			continue;
		}
		len = buf[i + 1];
		if (len < 2 || i + len > optlen)
			return;
		if (len == CW_OPT_LEN && kind == cw_opt_kind && buf[i + 2] == (__u8)(cw_opt_exid >> 8) &&
		    buf[i + 3] == (__u8)cw_opt_exid) {
			at = i + 1;	/* +1: 0 means none */
			break;
		}
		i += len;
	}
	if (!at)
		return;
	count(LC_OPTIONS);
	at = (at - 1) & 63;
	{
		struct sk_buff *kskb = bpf_cast_to_kern_ctx(skb);
		struct cw_layer_key key = {};
		struct cw_layer_stamp val = {};
		long err;
		int j;

		for (j = 0; j < 6; j++)
			key.event = (key.event << 8) | buf[at + 22 + j];
		key.ifindex = skb->ifindex;
		key.netns = BPF_CORE_READ(kskb, dev, nd_net.net, ns.inum);
		key.dir = dir;
		val.ts = bpf_ktime_get_boot_ns();
		val.flags = flags;
		val.len = skb->len;
		val.seq = bpf_ntohl(th.seq);
		__builtin_memcpy(val.trace, &buf[at + 6], 16);
		err = bpf_map_update_elem(&layer_stamps, &key, &val, BPF_NOEXIST);
		if (err == 0)
			count(LC_STORED);
		else if (err != -17)	/* -EEXIST: a later segment of the record; the first one stays */
			count(LC_FULL);
	}
}

SEC("tc")
int cw_layer_in(struct __sk_buff *skb)
{
	stamp(skb, 0);
	return TCX_NEXT;
}

SEC("tc")
int cw_layer_out(struct __sk_buff *skb)
{
	stamp(skb, 1);
	return TCX_NEXT;
}
