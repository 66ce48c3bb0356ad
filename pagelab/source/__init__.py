"""Where in the source, and whose: frames to file:line (symbolize), MAINTAINERS sections, /proc/allocinfo."""
