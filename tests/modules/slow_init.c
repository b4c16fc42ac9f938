/*
 * slow_init.c - a test module whose init takes its time (tests/tests/proxy_limits.rs): init creates the
 * file STARTED, then waits (at most 30 s) until the file RELEASE exists. Its one function, "slow" (id 32),
 * relays bytes unchanged.
 *
 * Build: cc -shared -fPIC -I srv6pipes-api/include -DSTARTED='"/x/started"' -DRELEASE='"/x/release"' \
 *           -o slow_init.so slow_init.c
 */
#include <fcntl.h>
#include <time.h>
#include <unistd.h>
#include "srv6pipes_module.h"

static int slow_init(void) {
    int fd = open(STARTED, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) close(fd);
    for (int i = 0; i < 3000 && access(RELEASE, F_OK) != 0; i++) {
        struct timespec ten_ms = { 0, 10 * 1000 * 1000 };
        nanosleep(&ten_ms, NULL);
    }
    return SRV6PIPES_OK;
}

static const struct srv6pipes_func slow_funcs[] = {
    { 32, "slow", 0, 0, slow_init, NULL, NULL, NULL, NULL },
};

const struct srv6pipes_module srv6pipes_module = {
    SRV6PIPES_ABI_VERSION, 1, "slow_init", "1.0", slow_funcs,
};
