#!/usr/bin/env bash
# Builds the production enclave container image (deploy/container/Containerfile) from the repository
# root: `cloister-enclave` without the simulator, on a distroless non-root runtime, for linux/amd64
# (SEV-SNP is x86-64 only). Uses podman when it is installed, else docker.
#
# Kubernetes manifests (deploy/kubernetes/) pin the image by digest, repo@sha256:<64 hex>, never by a
# tag: push the image (--push) and put the digest this script prints into deploy/kubernetes/values.toml.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/build-image.sh [--tag IMAGE[:TAG]] [--engine podman|docker] [--push]
                              [--build-arg NAME=VALUE]... [--help]

Builds deploy/container/Containerfile with the repository root as the build context.

  --tag IMAGE[:TAG]     name of the built image (default: cloister-enclave:dev). To push, use a
                        registry name, e.g. registry.example.com/cloister/cloister-enclave:0.1.0
  --engine ENGINE       podman or docker (default: podman if installed, else docker)
  --push                push the image after the build and print its repository digest
                        (registry/repo@sha256:...), the reference the manifests must use
  --build-arg NAME=VAL  passed to the build (repeatable), e.g. RUST_IMAGE=..., RUNTIME_IMAGE=...
                        (base images, pinned by digest in the Containerfile)
  --help                this text

The image's labels get VERSION from the workspace Cargo.toml and REVISION from `git rev-parse HEAD`
(with a -dirty suffix when the work tree has changes).

At the end the script prints the local image ID and, with --push, the pushed digest. Manifests pin
the digest: image = "REPO@sha256:..." in deploy/kubernetes/values.toml (render.py refuses a tag).

Exit status: 0 built (and pushed), 1 build or push failed, 2 usage error or no container engine.
EOF
}

die_usage() {
    echo "build-image.sh: $*" >&2
    echo "Try 'scripts/build-image.sh --help'." >&2
    exit 2
}

tag="cloister-enclave:dev"
engine=""
push=0
build_args=()

while [[ $# -gt 0 ]]; do
    case "$1" in
        --tag)
            [[ $# -ge 2 && -n "$2" ]] || die_usage "--tag needs a value"
            tag="$2"
            shift 2
            ;;
        --tag=*)
            tag="${1#--tag=}"
            [[ -n "$tag" ]] || die_usage "--tag needs a value"
            shift
            ;;
        --engine)
            [[ $# -ge 2 ]] || die_usage "--engine needs a value"
            engine="$2"
            shift 2
            ;;
        --engine=*)
            engine="${1#--engine=}"
            shift
            ;;
        --push)
            push=1
            shift
            ;;
        --build-arg)
            [[ $# -ge 2 && "$2" == *=* ]] || die_usage "--build-arg needs NAME=VALUE"
            build_args+=(--build-arg "$2")
            shift 2
            ;;
        --build-arg=*)
            [[ "${1#--build-arg=}" == *=* ]] || die_usage "--build-arg needs NAME=VALUE"
            build_args+=(--build-arg "${1#--build-arg=}")
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            die_usage "unknown argument: $1"
            ;;
    esac
done

# An image reference: [registry[:port]/]path[:tag]. A digest is what a build produces, not an input.
if [[ "$tag" == *@* ]]; then
    die_usage "--tag takes a name[:tag], not a digest (the digest is printed after the build)"
fi

if [[ -z "$engine" ]]; then
    if command -v podman >/dev/null 2>&1; then
        engine=podman
    elif command -v docker >/dev/null 2>&1; then
        engine=docker
    else
        echo "build-image.sh: neither podman nor docker is installed; install one (e.g. apt-get install podman)" >&2
        exit 2
    fi
else
    case "$engine" in
        podman | docker) ;;
        *) die_usage "--engine must be podman or docker (got: $engine)" ;;
    esac
    command -v "$engine" >/dev/null 2>&1 || {
        echo "build-image.sh: $engine is not installed" >&2
        exit 2
    }
fi

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
containerfile="deploy/container/Containerfile"
[[ -f "$repo_root/$containerfile" ]] || {
    echo "build-image.sh: $repo_root/$containerfile not found" >&2
    exit 2
}

version="$(sed -n '/^\[workspace\.package\]/,/^\[/ s/^version *= *"\([^"]*\)".*/\1/p' "$repo_root/Cargo.toml" | head -n 1)"
revision="unknown"
if git -C "$repo_root" rev-parse --verify -q HEAD >/dev/null 2>&1; then
    revision="$(git -C "$repo_root" rev-parse HEAD)"
    if [[ -n "$(git -C "$repo_root" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
        revision="${revision}-dirty"
    fi
fi

cd "$repo_root"
echo "build-image.sh: building $tag with $engine (version ${version:-unknown}, revision $revision)" >&2

build_cmd=("$engine" build
    --platform linux/amd64
    -f "$containerfile"
    -t "$tag"
    --build-arg "VERSION=${version:-unknown}"
    --build-arg "REVISION=$revision")
if [[ ${#build_args[@]} -gt 0 ]]; then
    build_cmd+=("${build_args[@]}")
fi
if [[ "$engine" == docker ]]; then
    # Cache mounts (RUN --mount=type=cache) need BuildKit; it is the default since Docker 23.
    export DOCKER_BUILDKIT=1
fi
build_cmd+=(.)

"${build_cmd[@]}" || {
    echo "build-image.sh: the build failed" >&2
    exit 1
}

image_id="$("$engine" image inspect --format '{{.Id}}' "$tag")"
echo
echo "Built:    $tag"
echo "Image ID: $image_id   (local; not the registry digest)"

if [[ "$push" -eq 1 ]]; then
    if [[ "$engine" == podman ]]; then
        digest_file="$(mktemp)"
        trap 'rm -f "$digest_file"' EXIT
        podman push --digestfile "$digest_file" "$tag" || {
            echo "build-image.sh: push failed" >&2
            exit 1
        }
        digest="$(cat "$digest_file")"
    else
        docker push "$tag" || {
            echo "build-image.sh: push failed" >&2
            exit 1
        }
        repo_digest="$(docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$tag" | head -n 1)"
        digest="${repo_digest##*@}"
    fi
    [[ "$digest" == sha256:* ]] || {
        echo "build-image.sh: could not read the pushed digest (got: '$digest')" >&2
        exit 1
    }
    # The repository part of the tag: drop a trailing :tag (a ':' after the last '/').
    repo="$tag"
    last="${tag##*/}"
    if [[ "$last" == *:* ]]; then
        repo="${tag%:*}"
    fi
    echo "Pushed:   ${repo}@${digest}"
    echo
    echo "Pin this in deploy/kubernetes/values.toml:"
    echo "  image = \"${repo}@${digest}\""
else
    echo
    echo "Not pushed. Manifests pin the image by its registry digest (repo@sha256:...), never by tag:"
    echo "  scripts/build-image.sh --tag REGISTRY/REPO:TAG --push"
    echo "prints the reference to put in deploy/kubernetes/values.toml (image = \"REPO@sha256:...\")."
fi
