#!/usr/bin/python3
"""Scrape a Prometheus endpoint repeatedly (tests/tests/proxy_limits.rs).

  scrape.py URL N INTERVAL OUT
    Fetch URL N times, INTERVAL seconds apart, appending each page to OUT after a line "# scrape I";
    a failed fetch is a line "# failed I REASON". Prints "scraped N" at the end. Each fetch is bounded.
"""
import sys
import time
import urllib.request


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    url, n, interval, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    with open(out, "w") as f:
        for i in range(n):
            try:
                with urllib.request.urlopen(url, timeout=10) as r:
                    page = r.read().decode()
                f.write(f"# scrape {i}\n{page}")
            except OSError as e:
                f.write(f"# failed {i} {e}\n")
            time.sleep(interval)
    print(f"scraped {n}", flush=True)


if __name__ == "__main__":
    main()
