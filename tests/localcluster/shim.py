"""Container shim: turns this process into one container of a Pod, then execs its command.

The node agent runs ``python -I -S shim.py SPEC.json`` with stdout/stderr already pointing at
the container's log file. In order, the shim:

1. joins the Pod's network namespace (``/run/netns/<name>``), so every container of the Pod
   shares its IP and loopback, as in a real Pod;
2. unshares a mount and a UTS namespace: the hostname becomes the Pod's name and nothing
   mounted below is seen outside this container;
3. builds the root filesystem: an overlay whose lower layer is the host's ``/`` (the
   "image"; see :mod:`tests.localcluster.images`) and whose upper layer is private to the
   container; ``/proc``, ``/dev`` and ``/sys`` are mounted into it, ``/tmp`` and ``/var/tmp``
   start empty, and ``/root`` is made traversable (an image keeps its Python elsewhere);
4. bind-mounts every volume at its ``mountPath`` (``subPath`` and ``readOnly`` honoured), plus
   ``/etc/resolv.conf``, ``/etc/hosts``, ``/etc/hostname`` and the termination-message file,
   as the kubelet does;
5. remounts the root read-only when ``readOnlyRootFilesystem`` is set (volumes stay writable);
6. chroots, changes to ``workingDir``, sets the supplementary groups, gid and uid from the
   security context, sets ``no_new_privs`` when privilege escalation is not allowed, and
   execs the command with the container's environment, looked up on its ``PATH``.

Any failure up to and including exec exits 128 and writes a one-line reason to the pipe
whose write end is ``spec["errfd"]`` (inherited from the agent) (close-on-exec, so a successful exec closes it with nothing written: runc
reports exec errors the same way). The agent reports it as ``StartError``, as a container
runtime that cannot start a container does. Standard library only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import sys

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
PR_SET_NO_NEW_PRIVS = 38

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]

# Start empty in every container, as in an image: the host's are not the container's.
EMPTIED = ("/tmp", "/var/tmp", "/run")


class ShimError(Exception):
    pass


def mount(source: str | None, target: str, fstype: str | None = None, flags: int = 0, data: str | None = None) -> None:
    def b(s: str | None) -> bytes | None:
        return s.encode() if s is not None else None

    if _libc.mount(b(source), b(target), b(fstype), flags, b(data)) != 0:
        err = ctypes.get_errno()
        raise ShimError(f"mount {source} on {target} ({fstype or 'bind'}): {os.strerror(err)}")


def bind(source: str, target: str, *, readonly: bool = False, recursive: bool = False) -> None:
    mount(source, target, None, MS_BIND | (MS_REC if recursive else 0))
    if readonly:
        mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | (MS_REC if recursive else 0))


def ensure_target(path: str, is_dir: bool) -> None:
    if is_dir:
        os.makedirs(path, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.path.exists(path):
            with open(path, "a"):
                pass


DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


def setup_dev(dev: str) -> None:
    """A private /dev like runc's: a tmpfs with the usual device nodes bind-mounted from the
    host, so files the kubelet puts there (the termination log) never touch the host's /dev."""
    mount("tmpfs", dev, "tmpfs", MS_NOSUID, "mode=755,size=65536k")
    for name in DEVICES:
        target = os.path.join(dev, name)
        with open(target, "a"):
            pass
        bind(f"/dev/{name}", target)
    for name, to in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                     ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx")):
        os.symlink(to, os.path.join(dev, name))
    for sub in ("shm", "pts", "mqueue"):
        os.makedirs(os.path.join(dev, sub))
    mount("shm", os.path.join(dev, "shm"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=65536k")


def inside(rootfs: str, path: str) -> str:
    """``path`` of the container, as a host path under ``rootfs``, resolving symlinks inside
    the root as the container would see them (runc's securejoin): Debian's ``/var/run`` is a
    link to ``/run``, and an absolute link must not lead out to the host's ``/run``."""
    parts = [c for c in path.split("/") if c and c != "."]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(rootfs, *resolved, part)
        if os.path.islink(candidate):
            hops += 1
            if hops > 40:
                raise ShimError(f"too many symlinks resolving {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [c for c in target.split("/") if c and c != "."] + parts
            continue
        resolved.append(part)
    return os.path.join(rootfs, *resolved)


def setup(spec: dict) -> None:
    # 1. network namespace of the Pod
    if spec.get("netns"):
        fd = os.open(f"/run/netns/{spec['netns']}", os.O_RDONLY)
        os.setns(fd, os.CLONE_NEWNET)
        os.close(fd)
    # 2. private mounts and hostname
    os.unshare(os.CLONE_NEWNS | os.CLONE_NEWUTS)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    name = spec["hostname"].encode()
    if _libc.sethostname(name, len(name)) != 0:
        raise ShimError(f"sethostname: {os.strerror(ctypes.get_errno())}")
    # 3. root filesystem
    rootfs, upper, work = spec["rootfs"], spec["upper"], spec["work"]
    for d in (rootfs, upper, work):
        os.makedirs(d, exist_ok=True)
    mount("overlay", rootfs, "overlay", 0, f"lowerdir=/,upperdir={upper},workdir={work}")
    os.chmod(inside(rootfs, "/root"), 0o755)
    mount("proc", inside(rootfs, "/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    setup_dev(inside(rootfs, "/dev"))
    bind("/sys", inside(rootfs, "/sys"), readonly=True, recursive=True)
    empties = []
    for empty in EMPTIED:
        target = inside(rootfs, empty)
        src = os.path.join(spec["scratch"], empty.strip("/").replace("/", "_"))
        os.makedirs(src, exist_ok=True)
        os.chmod(src, 0o1777)
        os.makedirs(target, exist_ok=True)
        bind(src, target)
        empties.append(target)
    # 4. volumes and kubelet-managed files: mount points first (they may lie inside the empty
    # directories), then, for a read-only root, the empty directories turn read-only like the
    # rest of the image, and only then the volumes go on top (a volume is what makes a path
    # writable, as in a real cluster; remounting later would hit the volume instead).
    targets = []
    for m in spec["mounts"]:
        target = inside(rootfs, m["target"])
        ensure_target(target, os.path.isdir(m["source"]))
        targets.append(target)
    if spec.get("readOnlyRoot"):
        for target in empties:
            mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    for m, target in zip(spec["mounts"], targets, strict=True):
        if m.get("late") and not os.path.exists(target):
            # Under a volume bound just before (an emptyDir at /tmp): the mount point goes there.
            ensure_target(target, os.path.isdir(m["source"]))
        bind(m["source"], target, readonly=bool(m.get("readOnly")))
    # 5. read-only root: remount the overlay itself; submounts keep their own flags
    if spec.get("readOnlyRoot"):
        mount(None, rootfs, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    # 6. enter it
    os.chroot(rootfs)
    workdir = spec.get("workingDir") or "/"
    try:
        os.chdir(workdir)
    except OSError as e:
        raise ShimError(f"chdir to working directory {workdir!r}: {e.strerror}") from None
    uid, gid = spec.get("uid"), spec.get("gid")
    # As runc's fixStdioPermissions: the container user owns its stdout/stderr, so a program
    # that reopens /dev/stdout (nginx's `error_log /dev/stdout`) can.
    for fd in (1, 2):
        if uid is not None and not os.path.samestat(os.fstat(fd), os.stat("/dev/null")):
            os.fchown(fd, int(uid), int(gid) if gid is not None else -1)
    if gid is not None or spec.get("groups"):
        os.setgroups(sorted({int(g) for g in spec.get("groups") or []} | ({int(gid)} if gid is not None else set())))
    if gid is not None:
        os.setgid(int(gid))
    if uid is not None:
        os.setuid(int(uid))
    if spec.get("noNewPrivs"):
        if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise ShimError("prctl(PR_SET_NO_NEW_PRIVS) failed")
    os.umask(0o022)


ERR_FD = -1


def fail(message: str) -> None:
    try:
        os.write(ERR_FD, message.encode()[:4096])
    except OSError:
        print(f"dockyard-shim: {message}", file=sys.stderr, flush=True)
    os._exit(128)


def main() -> None:
    spec_path = sys.argv[1]
    with open(spec_path) as f:
        spec = json.load(f)
    argv, env = spec["argv"], spec["env"]
    global ERR_FD
    ERR_FD = int(spec.get("errfd", -1))
    if ERR_FD >= 0:
        os.set_inheritable(ERR_FD, False)  # closed by a successful exec
    try:
        setup(spec)
    except (OSError, ShimError) as e:
        fail(f"cannot start container: {e}")
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as e:
        # The runtime's own wording, which users know from `kubectl describe pod`.
        if e.errno == 2:
            msg = f'exec: "{argv[0]}": executable file not found in $PATH'
        elif e.errno == 13:
            msg = f'exec: "{argv[0]}": permission denied'
        else:
            msg = f'exec: "{argv[0]}": {e.strerror}'
        fail(msg)


if __name__ == "__main__":
    main()
