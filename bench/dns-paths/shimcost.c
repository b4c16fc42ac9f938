/* What the shim adds to an unmodified program's getaddrinfo() and connect() (bench/dns-paths/run).
 * Usage: shimcost NAME N [WAYPOINT]  -> N getaddrinfo(NAME) calls, then N non-blocking connect() calls to the
 * last answer's first address (port 9: nothing listens, the peer resets), each call timed alone. With
 * WAYPOINT the program itself sets, inside the timed part, the SRH the shim would (destination, WAYPOINT, a
 * return-path TLV to WAYPOINT: 64 bytes), so that the kernel's share of the cost can be told apart. Prints
 * the median, 10th and 90th percentiles in nanoseconds, and the SRH the first connected socket carried. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, long long *v, int n) {
    qsort(v, n, sizeof *v, cmp);
    printf("%s median_ns=%lld p10_ns=%lld p90_ns=%lld n=%d\n", what, v[n / 2], v[n / 10], v[n * 9 / 10], n);
}

int main(int argc, char **argv) {
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: shimcost NAME N [WAYPOINT]\n");
        return 2;
    }
    int n = atoi(argv[2]);
    long long *g = calloc(n, sizeof *g), *c = calloc(n, sizeof *c);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET6;
    hints.ai_socktype = SOCK_STREAM;
    for (int i = 0; i < n; i++) {
        if (res) freeaddrinfo(res);
        long long t0 = now_ns();
        int rc = getaddrinfo(argv[1], "9", &hints, &res);
        g[i] = now_ns() - t0;
        if (rc != 0) {
            fprintf(stderr, "getaddrinfo: %s\n", gai_strerror(rc));
            return 1;
        }
    }
    struct sockaddr_in6 dst;
    memcpy(&dst, res->ai_addr, sizeof dst);
    unsigned char own[64] = {0, 7, 4, 1, 1, 0, 0, 0};
    if (argc == 4) {
        struct in6_addr wp;
        if (inet_pton(AF_INET6, argv[3], &wp) != 1) {
            fprintf(stderr, "bad WAYPOINT\n");
            return 2;
        }
        memcpy(own + 8, &dst.sin6_addr, 16);
        memcpy(own + 24, &wp, 16);
        own[40] = 124; /* return-path TLV: 2 reserved bytes, then the waypoint */
        own[41] = 18;
        memcpy(own + 44, &wp, 16);
        own[60] = 4; /* PadN of 2 */
        own[61] = 2;
    }
    int srh = -1;
    for (int i = 0; i < n; i++) {
        int fd = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK, 0);
        long long t0 = now_ns();
        if (argc == 4 && setsockopt(fd, IPPROTO_IPV6, IPV6_RTHDR, own, sizeof own) != 0) {
            perror("setsockopt");
            return 1;
        }
        int rc = connect(fd, (struct sockaddr *)&dst, sizeof dst);
        c[i] = now_ns() - t0;
        if (rc != 0 && errno != EINPROGRESS && errno != ECONNREFUSED) {
            perror("connect");
            return 1;
        }
        if (i == 0) {
            unsigned char buf[2048];
            socklen_t len = sizeof buf;
            srh = getsockopt(fd, IPPROTO_IPV6, IPV6_RTHDR, buf, &len) == 0 ? (int)len : -1;
        }
        close(fd);
    }
    report("getaddrinfo", g, n);
    report("connect", c, n);
    printf("srh_bytes=%d\n", srh);
    return 0;
}
