#!/bin/sh
# Print the 68-byte EICAR anti-virus test string to stdout (no newline).
# The string is assembled from pieces so this file never contains it literally.
# shellcheck disable=SC2016
printf '%s' 'X5O!P%@AP[4\PZX54(P^)7CC)7}$' 'EICAR-STANDARD-' 'ANTIVIRUS-TEST-FILE!$H+H*'
