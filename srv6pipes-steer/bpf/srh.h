/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * srh.h - what every SRv6Pipes steering program shares: headers, SRH layout, packet offsets.
 * Programs run on tc (TCX) hooks of Ethernet devices: skb->data starts at the MAC header.
 */
#ifndef SRV6PIPES_SRH_H
#define SRV6PIPES_SRH_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define NEXTHDR_ROUTING 43
#define SRH_TYPE 4
#define TLV_PAD1 0
#define TLV_RETURN_PATH 124
#define L3 ETH_HLEN
#define L4_PLAIN (L3 + sizeof(struct ipv6hdr))

/* The fixed part of an SRH (RFC 8754); the segments follow. */
struct srh_fixed {
	__u8 nexthdr;
	__u8 hdrlen;
	__u8 type;
	__u8 segments_left;
	__u8 last_entry;
	__u8 flags;
	__be16 tag;
};

/* A key of an LPM trie of IPv6 prefixes. */
struct prefix_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* TCP options walked at most (a 60-byte header holds no more). */
#define MAX_TCPOPTS 20

/*
 * Lower the MSS option of the SYN or SYN-ACK at tcp_off by cut bytes, so that full-sized segments still fit
 * once an SRH of cut bytes is in; returns cut if done, else 0. Global (not inlined): verified once.
 */
__attribute__((noinline)) int lower_mss(struct __sk_buff *skb, __u32 tcp_off, __u32 doff, __u32 cut)
{
	if (!skb)
		return 0;

	__u32 off = tcp_off + sizeof(struct tcphdr), end = tcp_off + doff;
	__u8 o[2];

	for (int i = 0; i < MAX_TCPOPTS; i++) {
		if (off >= end)
			return 0;
		if (bpf_skb_load_bytes(skb, off, o, 1))
			return 0;
		if (o[0] == 0) /* end of options */
			return 0;
		if (o[0] == 1) { /* NOP */
			off += 1;
			continue;
		}
		if (off + 2 > end || bpf_skb_load_bytes(skb, off, o, 2) || o[1] < 2)
			return 0;
		if (o[0] == 2 && o[1] == 4) {
			__be16 old, new;
			__u16 mss;

			if (bpf_skb_load_bytes(skb, off + 2, &old, 2))
				return 0;
			mss = bpf_ntohs(old);
			if (mss <= cut + 536)
				return 0;
			new = bpf_htons(mss - cut);
			if (bpf_l4_csum_replace(skb, tcp_off + offsetof(struct tcphdr, check), old, new, 2))
				return 0;
			if (bpf_skb_store_bytes(skb, off + 2, &new, 2, 0))
				return 0;
			return cut;
		}
		off += o[1];
	}
	return 0;
}

#endif
