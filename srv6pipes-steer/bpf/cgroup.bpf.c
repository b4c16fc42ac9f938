// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * cgroup.bpf.c - SRv6 steering of one cgroup's sockets on a client host (srv6run --via kernel), for
 * programs an LD_PRELOAD shim cannot reach: static binaries, Go, io_uring, raw system calls.
 *
 * run_egress: a TCP or UDP packet without an SRH whose socket belongs to cgroup cfg.cgroup_id
 *   (bpf_skb_cgroup_id) gets the SRH of the first rule (run_rules[0..cfg.nrules], the policy's order)
 *   covering its destination, port and protocol, with segments[0] = the original destination; the
 *   destination becomes the first waypoint. The TCP/UDP checksum stays right: its pseudo-header uses
 *   segments[0]. The packet is then routed again for the new destination (bpf_redirect_neigh to the
 *   device of the first waypoint's route, which may not be the destination's). A matched packet that cannot be
 *   steered is dropped when cfg.flags has CFG_FAIL_CLOSED, else sent unsteered; both are counted.
 *   A steered SYN records its flow with the SRH's length (run_flows).
 * run_ingress: the SYN-ACK of a recorded flow gets its MSS option lowered by that length, so that the
 *   socket's full-size segments still fit the MTU once the SRH is in; the entry goes.
 */
#include "srh.h"

#define MAX_RULES 32
#define RULE_SRH_MAX 512
#define CFG_FAIL_CLOSED 1
#define PROTO_TCP 1
#define PROTO_UDP 2
#define AF_INET6_ 10

/* Shared with the loader (src/cgroup.rs): keep in step. */
struct run_cfg {
	__u64 cgroup_id;
	__u32 nrules;
	__u32 flags;
};

struct run_rule {
	__u64 mask[2]; /* the destination prefix: mask and address, network order */
	__u64 addr[2];
	__be16 port; /* 0: any */
	__u8 proto; /* PROTO_TCP | PROTO_UDP */
	__u8 pad;
	__u16 srh_len; /* 0: the rule leaves the packet unsteered */
	__u16 pad2;
	/*
	 * The device of the route to the first waypoint, found by the loader: the packet's route was for
	 * its destination, possibly through another device. (bpf_fib_lookup would find it here, but answers
	 * BPF_FIB_LKUP_RET_FWD_DISABLED on a host that does not forward.)
	 */
	__u32 oif;
	__u32 pad3;
	__u8 first[16]; /* the first waypoint */
	__u8 srh[RULE_SRH_MAX]; /* segments[0] is written per packet */
};

struct flow_key {
	struct in6_addr local;
	struct in6_addr remote;
	__be16 lport;
	__be16 rport;
};

/* Counter indices: src/cgroup.rs names them in this order. */
enum {
	S_STEERED,
	S_UNMATCHED,
	S_MSS_CLAMPED,
	S_ERR_ADJUST,
	S_ERR_ROUTE,
	S_TOO_LONG,
	S_DROPPED,
	S_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct run_cfg);
} run_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_RULES);
	__type(key, __u32);
	__type(value, struct run_rule);
} run_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct flow_key);
	__type(value, __u16);
} run_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, S_MAX);
	__type(key, __u32);
	__type(value, __u64);
} run_stats SEC(".maps");

static __always_inline void stat(__u32 i)
{
	__u64 *c = bpf_map_lookup_elem(&run_stats, &i);

	if (c)
		__sync_fetch_and_add(c, 1);
}

/* The first rule covering (daddr, dport, proto), or NULL. */
static __always_inline struct run_rule *match(struct run_cfg *c, const struct in6_addr *daddr, __be16 dport,
					      __u8 proto)
{
	__u64 hi, lo;

	__builtin_memcpy(&hi, daddr, 8);
	__builtin_memcpy(&lo, (const __u8 *)daddr + 8, 8);
	for (__u32 i = 0; i < MAX_RULES; i++) {
		struct run_rule *r;

		if (i >= c->nrules)
			break;
		r = bpf_map_lookup_elem(&run_rules, &i);
		if (!r)
			break;
		if ((hi & r->mask[0]) != r->addr[0] || (lo & r->mask[1]) != r->addr[1])
			continue;
		if (!(r->proto & proto) || (r->port && r->port != dport))
			continue;
		return r;
	}
	return NULL;
}

/* Insert rule r's SRH into the packet (destination ip6->daddr); returns the verdict, or -1. */
static __always_inline int insert_srh(struct __sk_buff *skb, struct run_rule *r, struct ipv6hdr *ip6, __u8 syn,
				      __be16 sport, __be16 dport)
{
	__u8 nh = NEXTHDR_ROUTING;
	__be16 plen;
	__u32 len;

	len = r->srh_len;
	if (len < 24 || len > RULE_SRH_MAX)
		return -1;
	if ((__u32)bpf_ntohs(ip6->payload_len) + len > 0xffff) {
		stat(S_TOO_LONG);
		return -1;
	}
	/* no BPF_F_ADJ_ROOM_FIXED_GSO: the kernel lowers the GSO size of a GSO packet by the SRH's length */
	if (bpf_skb_adjust_room(skb, len, BPF_ADJ_ROOM_NET, 0)) {
		stat(S_ERR_ADJUST);
		return -1;
	}
	plen = bpf_htons(bpf_ntohs(ip6->payload_len) + len);
	if (bpf_skb_store_bytes(skb, L4_PLAIN, r->srh, len, 0) ||
	    bpf_skb_store_bytes(skb, L4_PLAIN, &ip6->nexthdr, 1, 0) ||
	    bpf_skb_store_bytes(skb, L4_PLAIN + 8, &ip6->daddr, 16, 0) ||
	    bpf_skb_store_bytes(skb, L3 + offsetof(struct ipv6hdr, payload_len), &plen, 2, 0) ||
	    bpf_skb_store_bytes(skb, L3 + offsetof(struct ipv6hdr, nexthdr), &nh, 1, 0) ||
	    bpf_skb_store_bytes(skb, L3 + offsetof(struct ipv6hdr, daddr), r->first, 16, 0))
		return TC_ACT_SHOT; /* half-written header: never send it */
	if (syn) {
		struct flow_key k = {};
		__u16 cut = len;

		__builtin_memcpy(&k.local, &ip6->saddr, 16);
		__builtin_memcpy(&k.remote, &ip6->daddr, 16);
		k.lport = sport;
		k.rport = dport;
		bpf_map_update_elem(&run_flows, &k, &cut, BPF_ANY);
	}
	/* the kernel routes it again (the first waypoint's device, its neighbour): see run_rule.oif */
	return bpf_redirect_neigh(r->oif, NULL, 0, 0);
}

SEC("classifier/egress")
int run_egress(struct __sk_buff *skb)
{
	struct ipv6hdr ip6;
	struct run_cfg *c;
	struct run_rule *r;
	__u32 zero = 0;
	__be16 ports[2];
	__u8 proto, syn = 0;
	int verdict;

	if (skb->protocol != bpf_htons(ETH_P_IPV6))
		return TC_ACT_OK;
	c = bpf_map_lookup_elem(&run_cfg, &zero);
	if (!c || bpf_skb_cgroup_id(skb) != c->cgroup_id)
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, L3, &ip6, sizeof(ip6)))
		return TC_ACT_OK;
	if (ip6.nexthdr == IPPROTO_TCP) {
		struct tcphdr th;

		if (bpf_skb_load_bytes(skb, L4_PLAIN, &th, sizeof(th)))
			return TC_ACT_OK;
		proto = PROTO_TCP;
		syn = th.syn && !th.ack;
	} else if (ip6.nexthdr == IPPROTO_UDP) {
		proto = PROTO_UDP;
	} else {
		return TC_ACT_OK; /* an SRH already (the program's own), ICMPv6, other headers */
	}
	if (bpf_skb_load_bytes(skb, L4_PLAIN, ports, sizeof(ports)))
		return TC_ACT_OK;
	r = match(c, &ip6.daddr, ports[1], proto);
	if (!r) {
		stat(S_UNMATCHED);
		return TC_ACT_OK;
	}
	if (r->srh_len == 0)
		return TC_ACT_OK;
	verdict = insert_srh(skb, r, &ip6, syn, ports[0], ports[1]);
	if (verdict != TC_ACT_REDIRECT) {
		stat(S_ERR_ROUTE);
		if (verdict == TC_ACT_SHOT || (c->flags & CFG_FAIL_CLOSED)) {
			stat(S_DROPPED);
			return TC_ACT_SHOT;
		}
		return TC_ACT_OK;
	}
	stat(S_STEERED);
	return verdict;
}

SEC("classifier/ingress")
int run_ingress(struct __sk_buff *skb)
{
	struct srh_fixed srh;
	struct flow_key k = {};
	struct ipv6hdr ip6;
	struct tcphdr th;
	__u32 off = L4_PLAIN;
	__u16 *cut;
	__u8 nh;

	if (skb->protocol != bpf_htons(ETH_P_IPV6))
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, L3, &ip6, sizeof(ip6)))
		return TC_ACT_OK;
	nh = ip6.nexthdr;
	if (nh == NEXTHDR_ROUTING) { /* a SYN-ACK steered back by the server (srv6reply) */
		if (bpf_skb_load_bytes(skb, off, &srh, sizeof(srh)) || srh.type != SRH_TYPE)
			return TC_ACT_OK;
		nh = srh.nexthdr;
		off += ((__u32)srh.hdrlen + 1) * 8;
	}
	if (nh != IPPROTO_TCP || bpf_skb_load_bytes(skb, off, &th, sizeof(th)))
		return TC_ACT_OK;
	if (!th.syn || !th.ack)
		return TC_ACT_OK;
	__builtin_memcpy(&k.local, &ip6.daddr, 16);
	__builtin_memcpy(&k.remote, &ip6.saddr, 16);
	k.lport = th.dest;
	k.rport = th.source;
	cut = bpf_map_lookup_elem(&run_flows, &k);
	if (!cut)
		return TC_ACT_OK;
	if (lower_mss(skb, off, (__u32)th.doff * 4, *cut))
		stat(S_MSS_CLAMPED);
	bpf_map_delete_elem(&run_flows, &k);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
