// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * A sockops program that writes a 28-byte experimental option (kind 253, an
 * ExID of its own) on every data segment and does nothing else: what the
 * option alone costs a real server, apart from the shim's work
 * (scripts/option-cost.sh). OPT_WRITE=0 builds the same program that only
 * switches the option callbacks on.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

SEC("sockops")
int opt_every_segment(struct bpf_sock_ops *skops)
{
	__u8 opt[28] = { 253, 28, 0xc5, 0xa8 };

	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG |
						  BPF_SOCK_OPS_PARSE_UNKNOWN_HDR_OPT_CB_FLAG);
		break;
	case BPF_SOCK_OPS_HDR_OPT_LEN_CB:
		if (OPT_WRITE && skops->skb_len > 0)
			bpf_reserve_hdr_opt(skops, sizeof(opt), 0);
		break;
	case BPF_SOCK_OPS_WRITE_HDR_OPT_CB:
		if (OPT_WRITE && skops->skb_len > 0)
			bpf_store_hdr_opt(skops, opt, sizeof(opt), 0);
		break;
	}
	return 1;
}
