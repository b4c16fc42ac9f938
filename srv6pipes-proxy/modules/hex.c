/*
 * hex.c - example srv6pipes-proxy module (see srv6pipes-module(3)): hexadecimal transport encoding.
 *
 *   hexenc (function 16): client->server bytes are sent as two lowercase hex digits each (output twice
 *                         as long as the input); server->client hex text is decoded back to bytes.
 *   hexdec (function 17): the reverse.
 *
 * A chain hexenc(P1) -> hexdec(P2) is transparent end to end while the P1-P2 link carries hex text.
 * It exercises what xor does not: output longer/shorter than input, input left unconsumed between calls
 * (an odd hex digit waits for its pair), per-flow state, and errors (a non-hex byte resets the flow).
 *
 * Build: cc -O2 -shared -fPIC -I../../srv6pipes-api/include -o hex.so hex.c
 * Load:  srv6pipes-proxy ctl load ./hex.so
 */
#include <stdatomic.h>
#include <stdlib.h>
#include "srv6pipes_module.h"

static atomic_long live_flows;

struct hex_state {
    int encode_up; /* 1 for hexenc: encode UP, decode DOWN */
    unsigned long long bytes[2];
};

static int hex_init(void) { atomic_store(&live_flows, 0); return SRV6PIPES_OK; }
static void hex_deinit(void) {}

static int spawn_common(int encode_up, void **state) {
    struct hex_state *s = calloc(1, sizeof *s);
    if (!s) return SRV6PIPES_ERROR;
    s->encode_up = encode_up;
    *state = s;
    atomic_fetch_add(&live_flows, 1);
    return SRV6PIPES_OK;
}
static int enc_spawn(const struct srv6pipes_flow *f, uint64_t arg, void **state) { (void)f; (void)arg; return spawn_common(1, state); }
static int dec_spawn(const struct srv6pipes_flow *f, uint64_t arg, void **state) { (void)f; (void)arg; return spawn_common(0, state); }

static void hex_despawn(void *state) { free(state); atomic_fetch_sub(&live_flows, 1); }

static int nibble(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int hex_process(void *state, int dir, const uint8_t *in, size_t in_len, size_t *consumed,
                       uint8_t *out, size_t out_cap, size_t *produced, uint32_t flags) {
    static const char digits[] = "0123456789abcdef";
    struct hex_state *s = state;
    int encode = (dir == SRV6PIPES_UP) == (s->encode_up != 0);
    size_t i = 0, o = 0;
    if (encode) {
        for (; i < in_len && o + 2 <= out_cap; i++) {
            out[o++] = digits[in[i] >> 4];
            out[o++] = digits[in[i] & 15];
        }
    } else {
        for (; i + 1 < in_len && o < out_cap; i += 2) {
            int hi = nibble(in[i]), lo = nibble(in[i + 1]);
            if (hi < 0 || lo < 0) return SRV6PIPES_ERROR;
            out[o++] = (uint8_t)(hi << 4 | lo);
        }
        /* An odd digit stays unconsumed until its pair arrives; at EOF it is an error. */
        if ((flags & SRV6PIPES_EOF) && i + 1 == in_len && o < out_cap) return SRV6PIPES_ERROR;
    }
    *consumed = i;
    *produced = o;
    s->bytes[dir & 1] += i;
    if (encode ? i < in_len : i + 1 < in_len) return SRV6PIPES_MORE;
    return SRV6PIPES_OK;
}

static const struct srv6pipes_func hex_funcs[] = {
    { 16, "hexenc", SRV6PIPES_DIR_BOTH, 0, hex_init, enc_spawn, hex_process, hex_despawn, hex_deinit },
    { 17, "hexdec", SRV6PIPES_DIR_BOTH, 0, NULL, dec_spawn, hex_process, hex_despawn, NULL },
};

const struct srv6pipes_module srv6pipes_module = {
    SRV6PIPES_ABI_VERSION, 2, "hex", "1.0", hex_funcs,
};
