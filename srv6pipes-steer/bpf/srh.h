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

#endif
