// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * reply.bpf.c - per-flow SRv6 reply steering on a replying host (a server, or a proxy's client-facing legs).
 *
 * reply_ingress: a TCP SYN (no ACK) whose SRH (type 4, directly after the IPv6 header) carries a
 *   return-path TLV (124) stores, keyed by (client, client port, server = SRH segments[0], server port),
 *   the SRH its replies must carry: [client, tlv[0], ..., tlv[upto-1]], segments left = last entry = upto.
 *   upto is the index of this host's own waypoint (reply_own: a proxy's prefixes; the waypoints after it
 *   are the rest of the way back), or every waypoint when none is its own (a server). Policy: each kept
 *   waypoint must share its first cfg.locator bits with a segment the SYN itself carried, or lie in
 *   reply_allow; otherwise the flow is refused (counted; its replies take the routed path). An empty
 *   return path means the routed path. The SYN's MSS option is lowered by the reply SRH's length.
 *   Later packets of a stored flow: FIN marks it, RST deletes it, the ACK after both FINs deletes it.
 * reply_egress: a TCP packet of a stored flow without an SRH gets the stored one (bpf_skb_adjust_room),
 *   destination = the first waypoint. The TCP checksum stays: its pseudo-header uses the client.
 *   Packets that already carry an SRH (a socket's own) are only used to track the flow's end.
 * The flow table is an LRU: the loader counts entries that left it without a FIN or RST (evicted).
 */
#include "srh.h"

#define MAX_WP 15 /* a TLV value is at most 255 bytes: 2 + 15 * 16 */
#define MAX_SEGS 16
#define MAX_TLVS 16
#define SRH_MAX (8 + 16 * (MAX_WP + 1))

#define ST_FIN_IN 1
#define ST_FIN_OUT 2
#define CFG_NO_MSS_CLAMP 1

struct flow_key {
	struct in6_addr client;
	struct in6_addr server;
	__be16 cport;
	__be16 sport;
};

struct flow {
	__u64 created_ns;
	__u64 steered; /* egress packets that got the SRH */
	struct in6_addr first; /* first waypoint: the destination of steered packets */
	__u16 srh_len; /* bytes, a multiple of 8 */
	__u16 mss_cut; /* by how much the SYN's MSS was lowered (0: not) */
	__u32 state; /* ST_FIN_IN | ST_FIN_OUT (32 bits: BPF atomics) */
	__u8 srh[SRH_MAX];
};

/* Shared with the loader (src/reply.rs): keep in step. */
struct reply_cfg {
	__u32 flags;
	__u32 pad;
	__u64 locator_mask[2]; /* the first `locator` bits set, in network order */
};

/* Counter indices: src/reply.rs names them in this order. */
enum {
	S_STORED,
	S_REPLACED,
	S_MSS_CLAMPED,
	S_STEERED,
	S_DELETED_RST,
	S_DELETED_FIN,
	S_ROUTED,
	S_REFUSED_LOCATOR,
	S_REFUSED_MALFORMED,
	S_ERR_STORE,
	S_ERR_ADJUST,
	S_SKIP_TOO_LONG,
	S_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536); /* the loader sets it from its settings */
	__type(key, struct flow_key);
	__type(value, struct flow);
} reply_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct reply_cfg);
} reply_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, S_MAX);
	__type(key, __u32);
	__type(value, __u64);
} reply_stats SEC(".maps");

/* --reply-allow: waypoints accepted whatever the SYN carried. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 64);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct prefix_key);
	__type(value, __u8);
} reply_allow SEC(".maps");

/* This host's own prefixes (a proxy's): its waypoint ends the part of the return path it sends along. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 64);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct prefix_key);
	__type(value, __u8);
} reply_own SEC(".maps");

/* Scratch space (too big for the 512-byte stack): the value being built, the SYN's segments. */
struct scratch {
	struct flow f;
	__u64 segs[MAX_SEGS][2];
	__u8 wp[MAX_WP][16];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} reply_scratch SEC(".maps");

static __always_inline void stat(__u32 i)
{
	__u64 *c = bpf_map_lookup_elem(&reply_stats, &i);

	if (c)
		__sync_fetch_and_add(c, 1);
}

static __always_inline int in_trie(void *trie, const __u8 *addr)
{
	struct prefix_key k = { .prefixlen = 128 };

	__builtin_memcpy(k.addr, addr, 16);
	return bpf_map_lookup_elem(trie, &k) != NULL;
}

/* Not a unicast waypoint: unspecified, loopback, multicast, link-local, IPv4-mapped. */
static __always_inline int bad_waypoint(const __u8 *a)
{
	__u64 hi, lo;

	__builtin_memcpy(&hi, a, 8);
	__builtin_memcpy(&lo, a + 8, 8);
	if (a[0] == 0xff || (a[0] == 0xfe && (a[1] & 0xc0) == 0x80))
		return 1;
	if (hi == 0 && (lo == 0 || lo == bpf_cpu_to_be64(1)))
		return 1;
	if (hi == 0 && a[8] == 0 && a[9] == 0 && a[10] == 0xff && a[11] == 0xff)
		return 1;
	return 0;
}

/*
 * Global (not inlined) functions are verified once, on their own, whatever state their callers arrive
 * with: the option and TLV walks leave many different states, and the work after them would otherwise be
 * verified once for each (over the verifier's million-instruction budget).
 */

/* Whether waypoint w shares the locator with one of the SYN's nsegs segments. */
static __always_inline int on_forward_path(struct scratch *s, const __u8 *w, __u32 nsegs,
					   const struct reply_cfg *c)
{
	__u64 hi, lo;

	__builtin_memcpy(&hi, w, 8);
	__builtin_memcpy(&lo, w + 8, 8);
	for (__u32 j = 0; j < MAX_SEGS; j++) {
		if (j >= nsegs)
			break;
		if (((hi ^ s->segs[j][0]) & c->locator_mask[0]) == 0 &&
		    ((lo ^ s->segs[j][1]) & c->locator_mask[1]) == 0)
			return 1;
	}
	return 0;
}

/*
 * Store the flow of the SYN whose return path lists n waypoints at addrs, its SRH at srh_off, its TCP
 * header at tcp_off; or count why not.
 */
__attribute__((noinline)) int store_flow(struct __sk_buff *skb, __u32 srh_off, __u32 tcp_off, __u32 addrs,
					 __u32 n)
{
	struct flow_key key = {};
	struct srh_fixed srh;
	__u32 nsegs;
	struct reply_cfg *c;
	struct tcphdr th;
	struct scratch *s;
	struct flow *f;
	__u32 upto, zero = 0;

	if (!skb || bpf_skb_load_bytes(skb, srh_off, &srh, sizeof(srh)))
		return 0;
	nsegs = (__u32)srh.last_entry + 1;
	if (n > MAX_WP || nsegs > MAX_SEGS || nsegs == 0)
		goto malformed;
	s = bpf_map_lookup_elem(&reply_scratch, &zero);
	c = bpf_map_lookup_elem(&reply_cfg, &zero);
	if (!s || !c)
		return 0;
	for (__u32 i = 0; i < MAX_WP; i++) {
		if (i >= n)
			break;
		if (bpf_skb_load_bytes(skb, addrs + 16 * i, s->wp[i], 16))
			goto malformed;
		if (bad_waypoint(s->wp[i]))
			goto malformed;
	}
	/* the part of the way back after this host: up to its own waypoint (the one visited first) */
	upto = n;
	for (__u32 k = 0; k < MAX_WP; k++) {
		__u32 i = MAX_WP - 1 - k;

		if (i >= n)
			continue;
		if (in_trie(&reply_own, s->wp[i])) {
			upto = i;
			break;
		}
	}
	if (upto == 0 || upto > MAX_WP) { /* empty return path, or this host is its last waypoint */
		stat(S_ROUTED);
		return 0;
	}
	for (__u32 j = 0; j < MAX_SEGS; j++) {
		if (j >= nsegs)
			break;
		if (bpf_skb_load_bytes(skb, srh_off + 8 + 16 * j, s->segs[j], 16))
			goto malformed;
	}
	for (__u32 i = 0; i < MAX_WP; i++) {
		if (i >= upto)
			break;
		if (!on_forward_path(s, s->wp[i], nsegs, c) && !in_trie(&reply_allow, s->wp[i])) {
			stat(S_REFUSED_LOCATOR);
			return 0;
		}
	}

	if (bpf_skb_load_bytes(skb, L3 + offsetof(struct ipv6hdr, saddr), &key.client, 16) ||
	    bpf_skb_load_bytes(skb, srh_off + 8, &key.server, 16) ||
	    bpf_skb_load_bytes(skb, tcp_off, &th, sizeof(th)))
		return 0;
	key.cport = th.source;
	key.sport = th.dest;

	f = &s->f;
	f->created_ns = bpf_ktime_get_ns();
	f->steered = 0;
	f->state = 0;
	f->srh_len = 8 + 16 * (upto + 1);
	f->srh[0] = IPPROTO_TCP;
	f->srh[1] = 2 * (upto + 1); /* 8-octet units after the first 8 */
	f->srh[2] = SRH_TYPE;
	f->srh[3] = upto; /* segments left */
	f->srh[4] = upto; /* last entry */
	f->srh[5] = 0;
	f->srh[6] = 0;
	f->srh[7] = 0;
	__builtin_memcpy(&f->srh[8], &key.client, 16); /* segments[0]: the client */
	for (__u32 i = 0; i < MAX_WP; i++) {
		if (i >= upto)
			break;
		__builtin_memcpy(&f->srh[24 + 16 * i], s->wp[i], 16);
		if (i == upto - 1)
			__builtin_memcpy(&f->first, s->wp[i], 16);
	}
	f->mss_cut = 0;
	if (!(c->flags & CFG_NO_MSS_CLAMP)) {
		f->mss_cut = lower_mss(skb, tcp_off, (__u32)th.doff * 4, f->srh_len);
		if (f->mss_cut)
			stat(S_MSS_CLAMPED);
	}
	/* a retransmitted SYN replaces its flow's entry: count it once */
	if (bpf_map_lookup_elem(&reply_flows, &key)) {
		if (bpf_map_update_elem(&reply_flows, &key, f, BPF_ANY) == 0)
			stat(S_REPLACED);
		else
			stat(S_ERR_STORE);
	} else if (bpf_map_update_elem(&reply_flows, &key, f, BPF_ANY) == 0) {
		stat(S_STORED);
	} else {
		stat(S_ERR_STORE);
	}
	return 0;
malformed:
	stat(S_REFUSED_MALFORMED);
	return 0;
}

/* A SYN with an SRH at srh_off: find its return-path TLV and store the flow. */
static __always_inline int on_syn(struct __sk_buff *skb, __u32 srh_off, struct srh_fixed *srh, __u32 tcp_off)
{
	__u32 tlv = srh_off + 8 + 16 * ((__u32)srh->last_entry + 1);
	__u32 end = srh_off + ((__u32)srh->hdrlen + 1) * 8;
	__u32 val_off = 0, val_len = 0;
	__u8 t[2];

	for (int i = 0; i < MAX_TLVS; i++) {
		if (tlv + 2 > end)
			break;
		if (bpf_skb_load_bytes(skb, tlv, t, 2))
			break;
		if (t[0] == TLV_PAD1) {
			tlv += 1;
			continue;
		}
		if (t[0] == TLV_RETURN_PATH) {
			val_off = tlv + 2;
			val_len = t[1];
			break;
		}
		tlv += 2 + t[1];
	}
	if (!val_off)
		return TC_ACT_OK;
	if (val_off + val_len > end) {
		stat(S_REFUSED_MALFORMED);
		return TC_ACT_OK;
	}
	/* 2 reserved bytes + 16 * n (libsrv6sock's layout), or 16 * n */
	if (val_len % 16 == 2)
		store_flow(skb, srh_off, tcp_off, val_off + 2, (val_len - 2) / 16);
	else if (val_len % 16 == 0)
		store_flow(skb, srh_off, tcp_off, val_off, val_len / 16);
	else
		stat(S_REFUSED_MALFORMED);
	return TC_ACT_OK;
}

/* Track a stored flow's end from one of its packets (FIN seen: bit `fin`). */
static __always_inline void track_end(struct flow_key *key, struct flow *f, struct tcphdr *th, __u32 fin)
{
	if (th->rst) {
		if (bpf_map_delete_elem(&reply_flows, key) == 0)
			stat(S_DELETED_RST);
	} else if (th->fin) {
		__sync_fetch_and_or(&f->state, fin);
	} else if (th->ack && f->state == (ST_FIN_IN | ST_FIN_OUT)) {
		/* the ACK after both FINs: nothing more to steer */
		if (bpf_map_delete_elem(&reply_flows, key) == 0)
			stat(S_DELETED_FIN);
	}
}

SEC("classifier/ingress")
int reply_ingress(struct __sk_buff *skb)
{
	struct flow_key key = {};
	struct srh_fixed srh = {};
	struct ipv6hdr ip6;
	struct tcphdr th;
	__u32 off = L4_PLAIN, srh_off = 0;
	struct flow *f;
	__u8 nh;

	if (skb->protocol != bpf_htons(ETH_P_IPV6))
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, L3, &ip6, sizeof(ip6)))
		return TC_ACT_OK;
	nh = ip6.nexthdr;
	if (nh == NEXTHDR_ROUTING) {
		if (bpf_skb_load_bytes(skb, off, &srh, sizeof(srh)) || srh.type != SRH_TYPE)
			return TC_ACT_OK;
		srh_off = off;
		nh = srh.nexthdr;
		off += ((__u32)srh.hdrlen + 1) * 8;
	}
	if (nh != IPPROTO_TCP)
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, off, &th, sizeof(th)))
		return TC_ACT_OK;

	if (th.syn && !th.ack)
		return srh_off ? on_syn(skb, srh_off, &srh, off) : TC_ACT_OK;
	if (!th.fin && !th.rst && !th.ack)
		return TC_ACT_OK;
	__builtin_memcpy(&key.client, &ip6.saddr, 16);
	if (srh_off) {
		if (bpf_skb_load_bytes(skb, srh_off + 8, &key.server, 16))
			return TC_ACT_OK;
	} else {
		__builtin_memcpy(&key.server, &ip6.daddr, 16);
	}
	key.cport = th.source;
	key.sport = th.dest;
	f = bpf_map_lookup_elem(&reply_flows, &key);
	if (f)
		track_end(&key, f, &th, ST_FIN_IN);
	return TC_ACT_OK;
}

SEC("classifier/egress")
int reply_egress(struct __sk_buff *skb)
{
	struct flow_key key = {};
	struct srh_fixed srh = {};
	struct ipv6hdr ip6;
	struct tcphdr th;
	struct flow *f;
	__u32 len;
	__u64 flags = 0;
	__u8 nh = NEXTHDR_ROUTING;
	__be16 plen;

	if (skb->protocol != bpf_htons(ETH_P_IPV6))
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, L3, &ip6, sizeof(ip6)))
		return TC_ACT_OK;
	if (ip6.nexthdr == NEXTHDR_ROUTING) {
		/* an SRH of the socket's own (a proxy's after accept): track the flow's end only */
		if (bpf_skb_load_bytes(skb, L4_PLAIN, &srh, sizeof(srh)) || srh.type != SRH_TYPE ||
		    srh.nexthdr != IPPROTO_TCP)
			return TC_ACT_OK;
		if (bpf_skb_load_bytes(skb, L4_PLAIN + ((__u32)srh.hdrlen + 1) * 8, &th, sizeof(th)) ||
		    bpf_skb_load_bytes(skb, L4_PLAIN + 8, &key.client, 16))
			return TC_ACT_OK;
		__builtin_memcpy(&key.server, &ip6.saddr, 16);
		key.cport = th.dest;
		key.sport = th.source;
		f = bpf_map_lookup_elem(&reply_flows, &key);
		if (f)
			track_end(&key, f, &th, ST_FIN_OUT);
		return TC_ACT_OK;
	}
	if (ip6.nexthdr != IPPROTO_TCP)
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, L4_PLAIN, &th, sizeof(th)))
		return TC_ACT_OK;
	__builtin_memcpy(&key.client, &ip6.daddr, 16);
	__builtin_memcpy(&key.server, &ip6.saddr, 16);
	key.cport = th.dest;
	key.sport = th.source;
	f = bpf_map_lookup_elem(&reply_flows, &key);
	if (!f)
		return TC_ACT_OK;
	len = f->srh_len;
	if (len < 24 || len > SRH_MAX)
		return TC_ACT_OK;
	if ((__u32)bpf_ntohs(ip6.payload_len) + len > 0xffff) {
		stat(S_SKIP_TOO_LONG);
		return TC_ACT_OK;
	}
	/* MSS already lowered by the SRH's length: keep the GSO size; otherwise the kernel lowers it */
	if (f->mss_cut >= len)
		flags |= BPF_F_ADJ_ROOM_FIXED_GSO;
	if (bpf_skb_adjust_room(skb, len, BPF_ADJ_ROOM_NET, flags)) {
		stat(S_ERR_ADJUST);
		return TC_ACT_OK;
	}
	plen = bpf_htons(bpf_ntohs(ip6.payload_len) + len);
	if (bpf_skb_store_bytes(skb, L4_PLAIN, f->srh, len, 0) ||
	    bpf_skb_store_bytes(skb, L3 + offsetof(struct ipv6hdr, payload_len), &plen, 2, 0) ||
	    bpf_skb_store_bytes(skb, L3 + offsetof(struct ipv6hdr, nexthdr), &nh, 1, 0) ||
	    bpf_skb_store_bytes(skb, L3 + offsetof(struct ipv6hdr, daddr), &f->first, 16, 0)) {
		stat(S_ERR_STORE);
		return TC_ACT_SHOT; /* half-written header: never send it */
	}
	__sync_fetch_and_add(&f->steered, 1);
	stat(S_STEERED);
	track_end(&key, f, &th, ST_FIN_OUT);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
