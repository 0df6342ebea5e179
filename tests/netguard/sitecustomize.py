"""Every Python process the test suite starts loads this: the loopback-only network guard."""

import loopback_guard

loopback_guard.install()
