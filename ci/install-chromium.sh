#!/bin/sh
# Debian's chromium for the browser tests (Playwright drives it through executable_path; its own
# browser download cannot reach its host). As root: installs it; otherwise prints the command.
if command -v chromium >/dev/null 2>&1 || [ -n "${CTXMIX_CHROMIUM:-}" ]; then
  exit 0
fi
CMD="apt-get update && apt-get install -y chromium"
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "== chromium (browser tests): $CMD"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
else
  echo "The browser tests need Debian's chromium. Install it with:  sudo sh -c '$CMD'"
  echo "(without it they are skipped outside CI and fail in CI)"
fi
