/*
 * srv6pipes_module.h - the module ABI of srv6pipes-proxy(8), documented in srv6pipes-module(3).
 *
 * A module is a shared object exporting one symbol, `srv6pipes_module` (struct srv6pipes_module), that
 * lists its functions (the paper's all_funcs[]). Each function is selected by the function bits of a SID
 * (RFC 8986 LOC:FUNCT:ARG) and gets the argument bits at spawn time.
 *
 * Threading: the proxy runs several worker threads. All calls for one flow (spawn, process for both
 * directions, despawn) happen on one thread and never concurrently; calls for different flows may run
 * concurrently on different threads, so module-global state must be thread-safe. init() runs once before
 * any spawn(); deinit() runs once after the last despawn(), which may be long after the module was
 * unloaded through the control socket (flows that still use it keep it loaded).
 *
 * Versioning: SRV6PIPES_ABI_VERSION changes whenever a structure below changes incompatibly; the proxy
 * refuses a module whose abi_version differs from its own. struct srv6pipes_flow starts with its size so
 * fields can be appended compatibly within one ABI version.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#ifndef SRV6PIPES_MODULE_H
#define SRV6PIPES_MODULE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ABI version implemented by this header. */
#define SRV6PIPES_ABI_VERSION 1u

/* Name of the symbol every module exports. */
#define SRV6PIPES_MODULE_SYMBOL "srv6pipes_module"

/* Directions of a flow. */
#define SRV6PIPES_UP   0 /* client -> server (the direction of the SYN) */
#define SRV6PIPES_DOWN 1 /* server -> client */

/* Bits of srv6pipes_func.directions: which directions process() transforms. A direction whose bit is
 * clear is relayed unchanged (the proxy may use splice(2) for it) and process() is never called for it. */
#define SRV6PIPES_DIR_UP   (1u << SRV6PIPES_UP)
#define SRV6PIPES_DIR_DOWN (1u << SRV6PIPES_DOWN)
#define SRV6PIPES_DIR_BOTH (SRV6PIPES_DIR_UP | SRV6PIPES_DIR_DOWN)

/* Flags passed to process(). */
#define SRV6PIPES_EOF 1u /* the peer closed this direction: no input follows `in`; flush everything */

/* Return values of init(), spawn() and process(). */
#define SRV6PIPES_OK    0  /* process(): progress made; at EOF, everything is flushed */
#define SRV6PIPES_MORE  1  /* process(): `out` is full, call again (with the unconsumed input) */
#define SRV6PIPES_ERROR (-1) /* any call: failure; for spawn()/process() the flow is reset both ways */

/* What a function learns about a flow at spawn time. Addresses are in network byte order, ports in host
 * byte order. */
struct srv6pipes_flow {
    uint32_t size;          /* sizeof(struct srv6pipes_flow) as filled by the proxy */
    uint32_t worker;        /* index of the worker thread that runs the flow */
    uint64_t flow_id;       /* unique per proxy process, as shown by `srv6pipes-proxy ctl flows` */
    uint8_t  client[16];    /* client address (the proxy's outbound leg uses it as source) */
    uint8_t  server[16];    /* final destination (segments[0] of the SRH) */
    uint16_t client_port;
    uint16_t server_port;
    uint32_t reserved;
    uint8_t  sid[16];       /* this proxy's SID in the SRH */
    uint64_t function;      /* function bits of the SID */
    uint64_t argument;      /* argument bits of the SID */
};

/* One function of a module (one entry of the paper's all_funcs[]). */
struct srv6pipes_func {
    /* Function number: the function bits of the SIDs that select this function. */
    uint64_t id;
    /* Short name (letters, digits, '-', '_'), unique among loaded functions; shown by the control socket. */
    const char *name;
    /* SRV6PIPES_DIR_* bits: the directions process() transforms. */
    uint32_t directions;
    /* Reserved, set to 0. */
    uint32_t flags;
    /* Called once when the module is loaded. Optional (NULL). Returns SRV6PIPES_OK or SRV6PIPES_ERROR
     * (the load then fails and nothing of the module stays registered). */
    int (*init)(void);
    /* Called for each new flow. Stores per-flow state in *state (may stay NULL). Optional.
     * SRV6PIPES_ERROR refuses the flow (the client gets a reset). */
    int (*spawn)(const struct srv6pipes_flow *flow, uint64_t argument, void **state);
    /* Transform bytes of direction `dir`: read up to in_len bytes from `in`, write up to out_cap bytes to
     * `out`, store the counts in *consumed and *produced. Unconsumed input is offered again, with more
     * data appended, on the next call. The output may be longer or shorter than the input.
     * Return SRV6PIPES_MORE when `out` is full and more output is pending; SRV6PIPES_OK otherwise.
     * With SRV6PIPES_EOF in `flags`, `in` is the last input: keep returning SRV6PIPES_MORE until
     * everything is flushed, then SRV6PIPES_OK with all input consumed. SRV6PIPES_ERROR resets the flow.
     * May be NULL when directions is 0 (a pure relay). */
    int (*process)(void *state, int dir, const uint8_t *in, size_t in_len, size_t *consumed,
                   uint8_t *out, size_t out_cap, size_t *produced, uint32_t flags);
    /* Called once when the flow ends (normally or not), after the last process(). Optional. */
    void (*despawn)(void *state);
    /* Called once when the module is unloaded and no flow uses it any more. Optional. */
    void (*deinit)(void);
};

/* The exported descriptor. */
struct srv6pipes_module {
    uint32_t abi_version;               /* SRV6PIPES_ABI_VERSION */
    uint32_t nfuncs;                    /* number of entries in funcs */
    const char *name;                   /* module name, unique among loaded modules */
    const char *version;                /* free-form module version, may be NULL */
    const struct srv6pipes_func *funcs; /* the paper's all_funcs[] */
};

#ifdef __cplusplus
}
#endif

#endif /* SRV6PIPES_MODULE_H */
