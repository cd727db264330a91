#!/bin/sh
# Stands in for Prisma's schema engine, whose binaries come from Prisma's own download server (unreachable
# here). `prisma generate` only checks that the engine file exists and never runs it; commands
# that do need it (migrate, db push) fail here with this message instead of a download error.
echo "k-entity: Prisma's schema engine is not installed; only 'prisma generate' works offline" >&2
exit 1
