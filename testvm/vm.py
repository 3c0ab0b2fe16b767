#!/usr/bin/env python3
"""The QEMU tier of testvm/: boots the appliance disk image (image/out/*.raw) under QEMU.

Role: runs scenarios against the real image in software emulation (TCG; no KVM needed):
OVMF with a per-VM copy of the UEFI variables, a qcow2 overlay per VM (the raw image stays
pristine) or a private sparse copy when a scenario edits the ESP, the serial console captured
to a log file, a NoCloud seed ISO (label `cidata`, built offline with xorriso) per VM,
user-mode networking with the API port forwarded to a free host port, and a private network
between VMs (QEMU socket netdev on loopback). It waits for markers in the serial log with
deadlines, never sleeps and hopes, and always kills its VMs and removes its temporary
directories, on failure and on SIGINT/SIGTERM too.

It must not modify the image it is given, must not mount anything on the host, must not talk
to any address but loopback, and must use only Python's standard library.

Scenarios:
  boot      (a) one VM: boot, mounts, /var grown, docker, the jaco daemon, cloud-init wrote the
            bootstrap file; `jaco cluster status` over the forwarded port once the image's jaco
            has `cluster bootstrap`.
  upgrade   (d) a bundle signed by an untrusted key and one with a corrupted file are refused
            and nothing reaches slot B; (b) an upgrade to --bundle reboots into slot B and is
            blessed; (c) an upgrade to --broken-bundle fails its health gate, falls back to B,
            is audited `upgrade_failed` and deny-listed.
  fleet     (e) two VMs: n1 joins from cloud-init with a join token issued through n0 (each
            advertises the host's port forwarded to it); `upgrade start --all --bundle` rolls
            the bundle over both, the follower n1 before the leader n0, both blessed.
  entries   systemd-boot Type #1 entries: the highest `version` among non-bad entries boots, its
            `options` override the UKI's command line, a `+0-3` entry is skipped, and
            systemd-bless-boot renames the counted entry after boot-complete.target.
"""

import argparse
import contextlib
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVMF_CODE = ["/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_CODE.fd"]
OVMF_VARS = ["/usr/share/OVMF/OVMF_VARS_4M.fd", "/usr/share/OVMF/OVMF_VARS.fd"]
MARK = "JACO-TESTVM"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Failed(Exception):
    pass


def first_existing(paths):
    for p in paths:
        if os.path.exists(p):
            return p
    raise Failed(f"none of {paths} exists (install ovmf: image/setup-host.sh)")


def free_port():
    """A port the kernel just gave out on loopback; QEMU binds it right after (small race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def partitions(raw):
    table = json.loads(run(["sfdisk", "-J", raw]).stdout)["partitiontable"]
    sector = table.get("sectorsize", 512)
    return {p.get("name"): dict(p, offset=p["start"] * sector) for p in table["partitions"]}


def mtools(args, esp_image):
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    return subprocess.run([args[0], "-i", esp_image, *args[1:]], check=True, text=True,
                          capture_output=True, env=env).stdout


def default_image():
    found = sorted(glob.glob(os.path.join(REPO, "image", "out", "jaco-*-x86_64.raw")),
                   key=os.path.getmtime)
    if not found:
        raise Failed("no image/out/jaco-*-x86_64.raw: run image/build.sh first")
    return found[-1]


class VM:
    """One QEMU guest with its own temporary directory; use as a context manager."""

    def __init__(self, image, name, *, user_data, meta_data=None, disk_gb=6, mem_mb=2048,
                 smp=2, copy_disk=False, private_net=None, reboots=False, api_port=None):
        self.image = os.path.abspath(image)
        self.name = name
        self.user_data = user_data
        self.meta_data = meta_data or f"instance-id: {name}-{os.getpid()}\nlocal-hostname: {name}\n"
        self.disk_gb = disk_gb
        self.mem_mb = mem_mb
        self.smp = smp
        self.copy_disk = copy_disk
        self.private_net = private_net  # ("listen"|"connect", port) or None
        self.reboots = reboots  # False: a guest reboot ends QEMU (-no-reboot)
        self.dir = None
        self.proc = None
        self.api_port = api_port  # host port forwarded to the guest's 7000 (None: any free one)
        self.serial = None
        self.started = None

    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix=f"jaco-testvm-{self.name}-")
        return self

    def __exit__(self, *exc):
        self.stop()
        if exc[0] is not None and self.serial and os.path.exists(self.serial):
            keep = os.environ.get("JACO_TESTVM_KEEP_LOGS")
            tail = open(self.serial, errors="replace").read()[-6000:]
            log(f"{self.name}: last serial output:\n{tail}")
            if keep:
                os.makedirs(keep, exist_ok=True)
                shutil.copy(self.serial, os.path.join(keep, f"{self.name}-serial.log"))
        shutil.rmtree(self.dir, ignore_errors=True)
        return False

    # --- disk -----------------------------------------------------------------------------
    def prepare(self):
        if self.copy_disk:
            self.disk = os.path.join(self.dir, "disk.raw")
            run(["cp", "--sparse=always", self.image, self.disk])
            run(["truncate", "-s", f"{self.disk_gb}G", self.disk])
            # truncate moved the end of the disk: move the backup GPT header there too.
            run(["sfdisk", "--relocate", "gpt-bak-std", self.disk])
            self.disk_format = "raw"
        else:
            self.disk = os.path.join(self.dir, "overlay.qcow2")
            run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", self.image, "-F", "raw",
                 self.disk, f"{self.disk_gb}G"])
            self.disk_format = "qcow2"
        self.vars = os.path.join(self.dir, "OVMF_VARS.fd")
        shutil.copy(first_existing(OVMF_VARS), self.vars)
        seed = os.path.join(self.dir, "seed")
        os.mkdir(seed)
        with open(os.path.join(seed, "user-data"), "w") as f:
            f.write(self.user_data)
        with open(os.path.join(seed, "meta-data"), "w") as f:
            f.write(self.meta_data)
        self.seed_iso = os.path.join(self.dir, "seed.iso")
        run(["xorriso", "-as", "mkisofs", "-quiet", "-o", self.seed_iso, "-V", "cidata",
             "-J", "-r", seed])

    def esp(self):
        """`image@@offset` of the ESP of this VM's private disk copy (copy_disk only)."""
        assert self.copy_disk
        return f"{self.disk}@@{partitions(self.disk)['esp']['offset']}"

    # --- run ------------------------------------------------------------------------------
    def start(self):
        self.serial = os.path.join(self.dir, "serial.log")
        self.api_port = self.api_port or free_port()
        cmd = [
            "qemu-system-x86_64", "-name", self.name, "-machine", "q35", "-accel", "tcg",
            "-cpu", "max", "-smp", str(self.smp), "-m", str(self.mem_mb),
            "-nodefaults", "-display", "none", "-monitor", "none",
            "-serial", f"file:{self.serial}",
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={first_existing(OVMF_CODE)}",
            "-drive", f"if=pflash,format=raw,unit=1,file={self.vars}",
            "-drive", f"if=virtio,format={self.disk_format},file={self.disk},discard=unmap",
            "-drive", f"if=virtio,format=raw,readonly=on,file={self.seed_iso}",
            "-netdev", f"user,id=wan,hostfwd=tcp:127.0.0.1:{self.api_port}-:7000",
            "-device", "virtio-net-pci,netdev=wan",
            "-device", "virtio-rng-pci",
        ]
        if not self.reboots:
            cmd.append("-no-reboot")
        if self.private_net:
            mode, port = self.private_net
            cmd += ["-netdev", f"socket,id=lan,{mode}=127.0.0.1:{port}",
                    "-device", "virtio-net-pci,netdev=lan"]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log(f"{self.name}: qemu pid {self.proc.pid}, API on 127.0.0.1:{self.api_port}, "
            f"serial {self.serial}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def wait_exit(self, timeout):
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Failed(f"{self.name}: still running after {timeout} s") from None

    def console(self):
        try:
            with open(self.serial, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, pattern, timeout, what=None):
        """Polls the serial log until `pattern` (regex) appears; returns (match, seconds since
        start). Fails at the deadline or when QEMU exits first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = regex.search(self.console())
            if m:
                return m, time.monotonic() - self.started
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""
                raise Failed(f"{self.name}: qemu exited ({self.proc.returncode}) before "
                             f"{what or pattern!r}: {out.strip()}")
            if time.monotonic() > deadline:
                raise Failed(f"{self.name}: no {what or pattern!r} within {timeout} s")
            time.sleep(0.25)  # poll interval of the log, not a wait for an outcome


# The guest-side check, run by cloud-init (runcmd, in cloud-final) and printed on the serial
# console. Every wait in it is a poll with a deadline.
GUEST_CHECK = r"""#!/bin/sh
# Role: testvm guest-side probe, installed by the NoCloud seed; prints JACO-TESTVM lines on the
# console. Must not change the node's configuration.
say() { echo "JACO-TESTVM $* (uptime $(cut -d' ' -f1 /proc/uptime))" >/dev/console; }
until_ok() { t=$1; shift; end=$(( $(date +%s) + t )); while ! "$@" >/dev/null 2>&1; do
  [ "$(date +%s)" -ge "$end" ] && return 1; sleep 1; done; }
say "probe started"
JOURNAL_LINES=30
say "cmdline $(cat /proc/cmdline)"
say "mount-root $(findmnt -no FSTYPE,OPTIONS /)"
rootdev=$(readlink -f "$(findmnt -no SOURCE /)")
say "root-dm ${rootdev##*/} $(cat "/sys/class/block/${rootdev##*/}/dm/name" 2>/dev/null || echo -) $(cat "/sys/class/block/${rootdev##*/}/dm/uuid" 2>/dev/null || echo -)"
say "mount-var $(findmnt -no SOURCE,FSTYPE /var) $(df -B1M --output=size /var | tail -n1 | tr -d ' ')MiB"
say "mount-efi $(findmnt -no FSTYPE,OPTIONS /efi)"
say "machine-id $(cat /etc/machine-id) $(findmnt -no FSTYPE /etc/machine-id)"
say "os-release $(grep -E '^IMAGE_(ID|VERSION)=' /etc/os-release | tr '\n' ' ')"
say "bootstrap-file $(stat -c '%a %U' /var/lib/jaco/bootstrap.yaml 2>&1)"
say "ssh $(command -v sshd || echo absent)"
if until_ok 120 curl -fsS http://127.0.0.1:9100/healthz; then say "jaco-daemon ok";
else say "jaco-daemon FAILED $(systemctl is-active jaco)"; fi
if until_ok 120 docker info; then say "docker ok $(docker version -f '{{.Server.Version}}')";
else say "docker FAILED $(systemctl is-active docker)"; fi
say "readyz $(curl -sS http://127.0.0.1:9100/readyz 2>&1 | head -c 200)"
if [ -f /var/lib/jaco/bootstrap.yaml ] && jaco cluster bootstrap --help >/dev/null 2>&1; then
  until_ok 180 sh -c 'jaco cluster status -o json | grep -q "\"initialized\": *true"'
  say "local-cluster-status $(jaco cluster status -o json 2>&1 | tr -d '\n ' | head -c 400)"
fi
say "units $(systemctl is-active jaco.socket jaco.service docker.service cloud-final.service jaco-bootstrap.service systemd-networkd.service | tr '\n' ' ')"
failed=$(systemctl list-units --state=failed --no-legend --plain | awk '{print $1}')
say "failed-units $(printf '%s' "$failed" | tr '\n' ' ')"
for u in $failed; do journalctl -b -u "$u" -n "${JOURNAL_LINES:-12}" --no-pager -o cat 2>&1 | sed "s/^/JACO-TESTVM journal $u: /" >/dev/console; done
if until_ok 300 systemd-analyze; then say "analyze $(systemd-analyze | head -n1)"; fi
say "cloud-init $(timeout 300 cloud-init status --wait --long 2>&1 | tr '\n' ' ' | head -c 300)"
if [ "${1:-}" = entries ]; then
  until_ok 240 systemctl is-active boot-complete.target && say "boot-complete reached"
  until_ok 60 sh -c 'systemctl show -p ActiveState --value systemd-bless-boot.service | grep -qx active'
  say "bless $(systemctl show -p ActiveState,Result --value systemd-bless-boot.service | tr '\n' ' ')"
  say "entries $(find /efi/loader/entries -name '*.conf' -printf '%f ' | tr -s ' ')"
  bootctl list --no-pager 2>&1 | sed 's/^/JACO-TESTVM bootctl /' >/dev/console
  sync
fi
say "done"
if [ "${1:-}" = entries ]; then systemctl poweroff; fi
"""


def user_data(mode, bootstrap_yaml, daemon_env=None):
    """NoCloud user-data: the bootstrap file as an operator would write it, plus the probe.

    The probe runs as a transient unit started from bootcmd (cloud-init's init stage), not from
    runcmd: runcmd runs in cloud-final, after multi-user.target, so a unit that never finishes
    starting would hide every marker."""
    script = textwrap.indent(GUEST_CHECK, "      ")
    boot = textwrap.indent(bootstrap_yaml, "      ")
    probe = ("systemd-run --no-block --unit=jaco-testvm-probe --property=After=cloud-init.service "
             f"/bin/sh /var/lib/jaco-testvm/check.sh {mode}")
    return (
        "#cloud-config\n"
        "bootcmd:\n"
        "  - [sh, -c, 'hostname \"$(cloud-init query local_hostname)\"']\n"
        f"  - [sh, -c, '{probe}']\n"
        "write_files:\n"
        "  - path: /var/lib/jaco/bootstrap.yaml\n"
        "    permissions: '0600'\n"
        "    content: |\n"
        f"{boot}"
        + (f"  - path: /var/lib/jaco/daemon.env\n    content: |\n"
           f"{textwrap.indent(daemon_env, '      ')}" if daemon_env else "")
        + "  - path: /var/lib/jaco-testvm/check.sh\n"
        "    permissions: '0755'\n"
        "    content: |\n"
        f"{script}"
    )


def lines(vm):
    """The probe's lines (a getty prompt may share a console line with one)."""
    return [l[l.index(MARK) + len(MARK) + 1:].rstrip("\r") for l in vm.console().splitlines()
            if MARK + " " in l]


def get(vm, key):
    for l in lines(vm):
        if l.startswith(key + " "):
            return l[len(key) + 1:]
    return None


def host_jaco():
    """The jaco CLI used from the host (JACO_BIN, else the release build of CARGO_TARGET_DIR)."""
    path = os.environ.get("JACO_BIN") or os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target")), "release", "jaco")
    return path if os.access(path, os.X_OK) else None


def has_subcommand(jaco, *words):
    if not jaco:
        return False
    r = subprocess.run([jaco, *words, "--help"], capture_output=True, text=True)
    return r.returncode == 0


def scenario_boot(image, args):
    """(a) one VM: boot, mounts, docker, daemon, cloud-init; cluster status when bootstrap exists."""
    jaco = host_jaco()
    full = has_subcommand(jaco, "cluster", "seed") and has_subcommand(jaco, "cluster", "bootstrap")
    seed_dir = tempfile.mkdtemp(prefix="jaco-testvm-seed-")
    try:
        if full:
            os.rmdir(seed_dir)
            run([jaco, "cluster", "seed", "--out", seed_dir, "--name", "testvm"])
            bootstrap = open(os.path.join(seed_dir, "bootstrap-init.yaml")).read()
            log(f"bootstrap file from `jaco cluster seed` ({jaco})")
        else:
            bootstrap = "init:\n  cluster_name: testvm\n"
            log("host jaco has no `cluster seed`/`cluster bootstrap`: checking boot, mounts, "
                "docker, daemon and cloud-init only")
        _scenario_boot(image, args, bootstrap, jaco if full else None, seed_dir)
    finally:
        shutil.rmtree(seed_dir, ignore_errors=True)


def _scenario_boot(image, args, bootstrap, jaco, seed_dir):
    timings = {}
    with VM(image, "n0", user_data=user_data("boot", bootstrap), disk_gb=args.disk_gb) as vm:
        vm.prepare()
        vm.start()
        _, timings["kernel started"] = vm.wait_for(r"Linux version", 120, "kernel start")
        _, timings["login prompt"] = vm.wait_for(r"login: ", 300, "login prompt")
        _, timings["probe started (cloud-init init stage)"] = vm.wait_for(MARK + r" probe started", 300, "probe start")
        _, timings["daemon answers /healthz"] = vm.wait_for(MARK + r" jaco-daemon (ok|FAILED)", 300, "daemon probe")
        vm.wait_for(MARK + r" done", 400, "probe end")
        api_open = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not api_open:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", vm.api_port), timeout=2):
                api_open = True
            if not api_open:
                time.sleep(0.5)
        report = {l.split(" ", 1)[0]: l.split(" ", 1)[1] if " " in l else "" for l in lines(vm)}
        for k, v in report.items():
            log(f"guest {k}: {v}")
        for k, v in timings.items():
            log(f"timing {k}: {v:.1f} s")
        log(f"forwarded API port 127.0.0.1:{vm.api_port} accepts TCP: {api_open}")
        status = None
        if jaco:
            env = dict(os.environ, JACO_TOKEN=open(os.path.join(seed_dir, "token")).read().strip())
            cmd = [jaco, "--server", f"127.0.0.1:{vm.api_port}", "--tls-server-name", vm.name,
                   "--ca-cert", os.path.join(seed_dir, "ca.pem"), "cluster", "status", "-o", "json"]
            deadline = time.monotonic() + 240
            while True:
                r = subprocess.run(cmd, capture_output=True, text=True, env=env)
                ok = False
                if r.returncode == 0:
                    with contextlib.suppress(ValueError):
                        doc = json.loads(r.stdout)
                        ok = doc.get("initialized") is True and any(
                            n.get("status") == "ready" and n.get("role") == "leader"
                            for n in doc.get("nodes", []))
                if ok:
                    status = r.stdout
                    timings["cluster status ready over the forwarded port"] = time.monotonic() - vm.started
                    break
                if "not valid for name" in r.stderr or time.monotonic() > deadline:
                    raise Failed(f"`jaco cluster status` through 127.0.0.1:{vm.api_port}: not ready "
                                 f"(deadline 240 s): {r.stdout.strip()} {r.stderr.strip()}")
                time.sleep(2)
            log(f"cluster status: {status.strip()}")
            log(f"timing cluster status ready over the forwarded port: "
                f"{timings['cluster status ready over the forwarded port']:.1f} s")
        problems = []
        if not re.search(r"erofs\s+ro\b", report.get("mount-root", "")):
            problems.append(f"root not read-only erofs: {report.get('mount-root')}")
        # The root is the device-mapper device systemd-veritysetup made in the initrd.
        if not re.match(r"dm-\d+ root CRYPT-VERITY-", report.get("root-dm", "")):
            problems.append(f"root not a dm-verity device: {report.get('root-dm')}")
        var = report.get("mount-var", "")
        m = re.search(r"(\d+)MiB", var)
        if "ext4" not in var or not m or int(m.group(1)) < 2048:
            problems.append(f"/var not ext4 grown past the image's 1 GiB: {var}")
        if "vfat" not in report.get("mount-efi", "") or "rw" not in report.get("mount-efi", ""):
            problems.append(f"/efi not rw vfat: {report.get('mount-efi')}")
        if not report.get("docker", "").startswith("ok"):
            problems.append(f"docker: {report.get('docker')}")
        if not report.get("jaco-daemon", "").startswith("ok"):
            problems.append(f"jaco daemon: {report.get('jaco-daemon')}")
        if not report.get("bootstrap-file", "").startswith("600 root"):
            problems.append(f"bootstrap file: {report.get('bootstrap-file')}")
        if not api_open:
            problems.append("the forwarded API port does not accept connections")
        if "status: done" not in report.get("cloud-init", ""):
            problems.append(f"cloud-init: {report.get('cloud-init')}")
        if problems:
            raise Failed("; ".join(problems))
        log("scenario boot: PASS")


def scenario_entries(image, args):
    """Type #1 entries, boot counting and blessing (see the module docstring)."""
    with VM(image, "entries", user_data=user_data("entries", "init:\n  cluster_name: testvm\n"),
            copy_disk=True, disk_gb=args.disk_gb) as vm:
        vm.prepare()
        esp = vm.esp()
        entries = [e for e in mtools(["mdir", "-b", "::/loader/entries"], esp).split() if e.endswith(".conf")]
        if len(entries) != 1:
            raise Failed(f"expected the base entry only, found {entries}")
        base_name = entries[0].rsplit("/", 1)[-1]
        base = mtools(["mtype", f"::/loader/entries/{base_name}"], esp)
        version = re.search(r"^title jaco (\S+)", base, re.M).group(1)
        options = re.search(r"^options (.*)$", base, re.M).group(1).strip()
        efi = re.search(r"^efi (.*)$", base, re.M).group(1).strip()
        # For an image whose jaco has no `upgrade health-gate`, --mask-health-gate masks the
        # unit on the test entries' command line (an entry's options are the command line).
        mask = " systemd.mask=jaco-health-gate.service" if args.mask_health_gate else ""
        extra = {
            f"jaco-2-{version}+3.conf": (2, f"{options} jaco.testentry=2{mask}"),
            f"jaco-3-{version}+0-3.conf": (3, f"{options} jaco.testentry=3{mask}"),
        }
        for fname, (ver, opts) in extra.items():
            path = os.path.join(vm.dir, fname)
            with open(path, "w") as f:
                f.write(f"title jaco {version} test entry {ver}\nsort-key jaco\nversion {ver}\n"
                        f"efi {efi}\noptions {opts}\n")
            mtools(["mcopy", "-o", path, f"::/loader/entries/{fname}"], esp)
        log(f"entries before boot: {base_name} + {sorted(extra)}")
        vm.start()
        _, t_login = vm.wait_for(r"login: ", 300, "login prompt")
        vm.wait_for(MARK + r" done", 400, "probe end")
        vm.wait_exit(120)
        after = sorted(e.rsplit("/", 1)[-1] for e in mtools(["mdir", "-b", "::/loader/entries"], esp).split()
                       if e.endswith(".conf"))
        for l in lines(vm):
            log(f"guest {l}")
        log(f"entries after boot: {after}; login prompt at {t_login:.1f} s")
        cmdline = get(vm, "cmdline") or ""
        problems = []
        if "jaco.testentry=2" not in cmdline:
            problems.append(f"(i)/(ii) booted command line is not entry 2's options: {cmdline}")
        if f"jaco-3-{version}+0-3.conf" not in after:
            problems.append("(iii) the +0-3 entry changed")
        if "jaco.testentry=3" in cmdline:
            problems.append("(iii) the +0-3 entry was booted")
        if f"jaco-2-{version}.conf" not in after:
            problems.append(f"(iv) entry 2 not blessed (entries: {after})")
        if problems:
            raise Failed("; ".join(problems))
        log("scenario entries: PASS ((i) highest version booted, (ii) options override the UKI "
            "cmdline, (iii) +0-3 skipped, (iv) blessed after boot-complete.target)")


def jaco_cli(jaco, vm, seed_dir, *args, check=False):
    """Runs the host's jaco against the VM's forwarded API port with the seeded token and CA."""
    env = dict(os.environ, JACO_TOKEN=open(os.path.join(seed_dir, "token")).read().strip())
    cmd = [jaco, "--server", f"127.0.0.1:{vm.api_port}", "--tls-server-name", vm.name,
           "--ca-cert", os.path.join(seed_dir, "ca.pem"), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and r.returncode != 0:
        raise Failed(f"`jaco {' '.join(args)}` failed ({r.returncode}): {r.stdout}{r.stderr}")
    return r


def poll_json(jaco, vm, seed_dir, args, accept, timeout, what):
    """Polls a `jaco … -o json` read until `accept(doc)` is true; returns the document."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        r = jaco_cli(jaco, vm, seed_dir, *args, "-o", "json")
        if r.returncode == 0:
            with contextlib.suppress(ValueError):
                doc = json.loads(r.stdout)
                last = doc
                if accept(doc):
                    return doc
        else:
            last = r.stderr.strip()
        if time.monotonic() > deadline:
            raise Failed(f"no {what} within {timeout} s; last answer: {last}")
        time.sleep(2)


def plan_node(doc):
    return (doc or {}).get("nodes", [{}])[0] if doc else {}


def this_node(doc):
    return next(n for n in doc["nodes"] if n["name"] == doc["node"])


def overlay_writes(overlay, start, length):
    """Bytes of [start, start+length) that the VM wrote into its qcow2 overlay."""
    m = json.loads(run(["qemu-img", "map", "-U", "--output=json", overlay]).stdout)
    written = 0
    for extent in m:
        if extent.get("depth") != 0 or not extent.get("data"):
            continue
        lo = max(start, extent["start"])
        hi = min(start + length, extent["start"] + extent["length"])
        written += max(0, hi - lo)
    return written


def tampered_bundles(jaco, good, work):
    """(d): the good bundle re-signed by a stranger's key, one with a flipped payload byte, and
    its payload without the dm-verity hash tree, signed with the CI test key the image trusts."""
    payload = os.path.join(work, "payload")
    os.makedirs(payload)
    run(["tar", "-xf", good, "-C", payload])
    manifest = json.load(open(os.path.join(payload, "manifest.json")))
    if not manifest.get("root_hash"):
        raise Failed(f"{good} carries no dm-verity root hash: rebuild it with image/build.sh")
    create = [jaco, "upgrade", "bundle", "create", "--version", manifest["version"],
              "--min-version", manifest["min_version"],
              "--root", os.path.join(payload, "root.img.zst"),
              "--kernel", os.path.join(payload, "kernel.efi")]
    run([jaco, "upgrade", "bundle", "keygen", "--out", os.path.join(work, "stranger")])
    foreign = os.path.join(work, "foreign.bundle")
    run(create + ["--verity", os.path.join(payload, "root.verity"), "--root-hash", manifest["root_hash"],
                  "--key", os.path.join(work, "stranger.key"), "--out", foreign])
    hashless = os.path.join(work, "hashless.bundle")
    run(create + ["--key", os.path.join(REPO, "upgrade", "test-keys", "ci.key"), "--out", hashless])
    corrupt = os.path.join(work, "corrupt.bundle")
    shutil.copy(good, corrupt)
    with open(corrupt, "r+b") as f:
        f.seek(os.path.getsize(corrupt) // 2)  # inside root.img.zst, the largest entry
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    shutil.rmtree(payload)
    return foreign, corrupt, hashless


def scenario_upgrade(image, args):
    """(b), (c), (d) on one VM: bad bundles refused with nothing written; an upgrade to slot B
    blessed; a version that fails its health gate rolled back, audited and deny-listed."""
    jaco = host_jaco()
    if not (jaco and has_subcommand(jaco, "upgrade", "bundle", "create")):
        raise Failed("the upgrade scenario needs a host jaco with `upgrade bundle` (JACO_BIN)")
    good, broken = args.bundle, args.broken_bundle
    for path in (good, broken):
        if not (path and os.path.exists(path)):
            raise Failed(f"bundle {path!r} missing: build it with image/build.sh (see testvm/README.md)")
    work = tempfile.mkdtemp(prefix="jaco-testvm-upgrade-")
    timings = {}
    try:
        seed_dir = os.path.join(work, "seed")
        run([jaco, "cluster", "seed", "--out", seed_dir, "--name", "testvm"])
        bootstrap = open(os.path.join(seed_dir, "bootstrap-init.yaml")).read()
        foreign, corrupt, hashless = tampered_bundles(jaco, good, work)
        parts = partitions(image)
        with VM(image, "n0", user_data=user_data("upgrade", bootstrap), disk_gb=args.disk_gb,
                reboots=True) as vm:
            vm.prepare()
            vm.start()
            poll_json(jaco, vm, seed_dir, ["cluster", "status"],
                      lambda d: d.get("initialized") and this_node(d).get("status") == "ready",
                      600, "ready single-node cluster")
            timings["boot to cluster ready"] = time.monotonic() - vm.started
            nodes = poll_json(jaco, vm, seed_dir, ["node", "list"],
                              lambda d: d and d[0].get("os_version"), 120, "node os_version")
            log(f"before: {nodes}")
            if nodes[0].get("root_verity") is not True:
                raise Failed(f"the first boot's root is not dm-verity protected: {nodes}")

            # (d) refused before anything is recorded or written.
            for bad, code, reason in ((foreign, "upgrade_verification_failed", "untrusted_key"),
                                      (corrupt, "upgrade_verification_failed", "checksum_mismatch"),
                                      (hashless, "validation_failed", "verity_required")):
                r = jaco_cli(jaco, vm, seed_dir, "-v", "upgrade", "start", "--bundle", bad)
                if r.returncode == 0 or code not in r.stderr or reason not in r.stderr:
                    raise Failed(f"{bad} was not refused with {code} {reason}: {r.stdout}{r.stderr}")
                said = r.stderr.strip().splitlines()
                log(f"(d) {os.path.basename(bad)} refused: {next((l for l in said if l.startswith('Error')), said[0])}")
            r = jaco_cli(jaco, vm, seed_dir, "upgrade", "status", check=True)
            if "no upgrade has run" not in r.stdout:
                raise Failed(f"a refused bundle left a plan: {r.stdout}")
            for label in ("root-b", "root-b-verity"):
                part = parts[label]
                written = overlay_writes(vm.disk, part["offset"], part["size"] * 512)
                if written:
                    raise Failed(f"refused bundles wrote {written} bytes into {label}")
            log("(d) PASS: nothing recorded, 0 bytes written to root-b or root-b-verity")

            # (b) upgrade into slot B, reboot, blessed.
            t0 = time.monotonic()
            r = jaco_cli(jaco, vm, seed_dir, "upgrade", "start", "--bundle", good)
            if r.returncode != 0:
                raise Failed(f"upgrade start failed: {r.stdout}{r.stderr}")
            timings["(b) upload + verify + install until reboot"] = time.monotonic() - t0
            plan = poll_json(jaco, vm, seed_dir, ["upgrade", "status"],
                             lambda d: d and plan_node(d).get("state") in ("succeeded", "failed", "rolled_back"),
                             900, "upgrade outcome")
            timings["(b) reboot to blessed"] = time.monotonic() - t0 - timings["(b) upload + verify + install until reboot"]
            if plan_node(plan).get("state") != "succeeded":
                raise Failed(f"(b) upgrade did not succeed: {plan}")
            nodes = poll_json(jaco, vm, seed_dir, ["node", "list"],
                              lambda d: d and d[0].get("boot_slot") == "b" and d[0].get("root_verity") is True,
                              120, "node on slot b, root through dm-verity")
            log(f"(b) PASS: {nodes}")

            # (c) a version that fails its health gate rolls back to B by itself.
            t0 = time.monotonic()
            r = jaco_cli(jaco, vm, seed_dir, "upgrade", "start", "--bundle", broken)
            if r.returncode != 0:
                raise Failed(f"upgrade start (broken) failed: {r.stdout}{r.stderr}")
            plan = poll_json(jaco, vm, seed_dir, ["upgrade", "status"],
                             lambda d: d and plan_node(d).get("state") in ("succeeded", "failed", "rolled_back"),
                             1200, "broken upgrade outcome")
            timings["(c) start to rolled back"] = time.monotonic() - t0
            if plan_node(plan).get("state") != "rolled_back":
                raise Failed(f"(c) expected rolled_back: {plan}")
            audit = jaco_cli(jaco, vm, seed_dir, "audit", "--type", "upgrade_failed", "-o", "json", check=True)
            if "upgrade_failed" not in audit.stdout:
                raise Failed(f"(c) no upgrade_failed audit event: {audit.stdout}")
            r = jaco_cli(jaco, vm, seed_dir, "upgrade", "start", "--bundle", broken)
            if r.returncode == 0 or "failed on this node before" not in r.stderr:
                raise Failed(f"(c) the failed version was not deny-listed: {r.stdout}{r.stderr}")
            nodes = poll_json(jaco, vm, seed_dir, ["node", "list"],
                              lambda d: d and d[0].get("boot_slot") == "b" and d[0].get("root_verity") is True,
                              120, "node back on slot b, root through dm-verity")
            log(f"(c) PASS: {plan_node(plan)}; audit {audit.stdout.strip()[:300]}")
        for k, v in timings.items():
            log(f"timing {k}: {v:.1f} s")
        log("scenario upgrade: PASS")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def serve_file_once(path):
    """Serves `path`'s directory over HTTP on 127.0.0.1 (a daemon thread, gone with the
    harness); returns the port."""
    import functools
    import http.server
    import threading
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass
    handler = functools.partial(Quiet, directory=os.path.dirname(os.path.abspath(path)))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def first_answer(jaco, vms, seed_dir, args):
    """The JSON answer of the first VM that answers `jaco … -o json` (one may be rebooting)."""
    for vm in vms:
        r = jaco_cli(jaco, vm, seed_dir, *args, "-o", "json")
        if r.returncode == 0:
            with contextlib.suppress(ValueError):
                return json.loads(r.stdout)
    return None


def scenario_fleet(image, args):
    """(e) two VMs: the second joins from cloud-init with a token the operator issued through
    the first; then one `upgrade start --all` rolls the bundle over both, the follower first."""
    jaco = host_jaco()
    if not (jaco and has_subcommand(jaco, "upgrade", "bundle", "create")):
        raise Failed("the fleet scenario needs a host jaco with `upgrade bundle` (JACO_BIN)")
    if not (args.bundle and os.path.exists(args.bundle)):
        raise Failed(f"bundle {args.bundle!r} missing: build it with image/build.sh (testvm/README.md)")
    work = tempfile.mkdtemp(prefix="jaco-testvm-fleet-")
    timings = {}
    try:
        seed_dir = os.path.join(work, "seed")
        run([jaco, "cluster", "seed", "--out", seed_dir, "--name", "testvm"])
        bootstrap = open(os.path.join(seed_dir, "bootstrap-init.yaml")).read()
        # Each guest reaches the other through the host (QEMU user networking: 10.0.2.2 is the
        # host's loopback), at the port forwarded to the other's API.
        ports = [free_port(), free_port()]
        advertise = [f"JACO_ADVERTISE=10.0.2.2:{port}\n" for port in ports]
        t0 = time.monotonic()
        with VM(image, "n0", user_data=user_data("fleet", bootstrap, advertise[0]),
                disk_gb=args.disk_gb, reboots=True, api_port=ports[0]) as n0:
            n0.prepare()
            n0.start()
            poll_json(jaco, n0, seed_dir, ["cluster", "status"],
                      lambda d: d.get("initialized") and this_node(d).get("status") == "ready",
                      600, "n0 ready")
            timings["n0 boot to cluster ready"] = time.monotonic() - t0
            issued = json.loads(jaco_cli(jaco, n0, seed_dir, "node", "issue-join-token",
                                         "--node-name", "n1", "--san", "10.0.2.2", "-o", "json",
                                         check=True).stdout)
            join = (f"join:\n  peers: [\"10.0.2.2:{ports[0]}\"]\n  token: \"{issued['token']}\"\n"
                    f"  ca_cert: |\n{textwrap.indent(issued['ca_cert_pem'], '    ')}")
            t1 = time.monotonic()
            with VM(image, "n1", user_data=user_data("fleet", join, advertise[1]),
                    disk_gb=args.disk_gb, reboots=True, api_port=ports[1]) as n1:
                n1.prepare()
                n1.start()
                nodes = poll_json(jaco, n0, seed_dir, ["node", "list"],
                                  lambda d: len(d) == 2 and all(n.get("status") == "ready" and
                                                                n.get("os_version") for n in d),
                                  900, "n1 joined and ready")
                timings["n1 boot to joined and ready"] = time.monotonic() - t1
                log(f"(e) n1 joined from cloud-init: {nodes}")
                before = {n["name"]: n["os_version"] for n in nodes}

                t2 = time.monotonic()
                bundle = args.bundle
                if args.serve_bundle:
                    # n0 fetches it over HTTP from the host (10.0.2.2 is the host's loopback).
                    port = serve_file_once(args.bundle)
                    bundle = f"http://10.0.2.2:{port}/{os.path.basename(args.bundle)}"
                    log(f"(e) serving the bundle at {bundle}")
                r = jaco_cli(jaco, n0, seed_dir, "upgrade", "start", "--bundle", bundle,
                             "--all", "--detach")
                if r.returncode != 0:
                    raise Failed(f"upgrade start --all failed: {r.stdout}{r.stderr}")
                timings["bundle to n0 (upload or fetch) + plan recorded"] = time.monotonic() - t2
                seen, plan = [], None
                deadline = time.monotonic() + 2400
                while True:
                    plan = first_answer(jaco, [n1, n0], seed_dir, ["upgrade", "status"]) or plan
                    for step in (plan or {}).get("nodes", []):
                        key = f"{step['node']} {step['state']}"
                        if key not in seen:
                            seen.append(key)
                            log(f"(e) {key} at {time.monotonic() - t2:.0f} s")
                    if plan and plan.get("state") in ("succeeded", "failed", "aborted"):
                        break
                    if time.monotonic() > deadline:
                        raise Failed(f"(e) the fleet upgrade did not end within 2400 s: {plan}")
                    time.sleep(3)
                timings["fleet upgrade of both"] = time.monotonic() - t2
                if plan.get("state") != "succeeded":
                    raise Failed(f"(e) fleet upgrade ended {plan.get('state')}: {plan}")
                rebooted = [k.split()[0] for k in seen if k.endswith(" rebooting")]
                if rebooted != ["n1", "n0"]:
                    raise Failed(f"(e) expected the follower n1 before the leader n0, saw {seen}")
                nodes = poll_json(jaco, n0, seed_dir, ["node", "list"],
                                  lambda d: len(d) == 2 and all(
                                      n.get("os_version") == plan["version"] and n.get("status") == "ready"
                                      and n.get("root_verity") is True
                                      for n in d), 300, "both nodes on the new version, roots through dm-verity")
                log(f"(e) PASS: {before} -> "
                    f"{[(n['name'], n['os_version'], n['boot_slot'], n['root_verity']) for n in nodes]}")
        for k, v in timings.items():
            log(f"timing {k}: {v:.1f} s")
        log("scenario fleet: PASS")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", choices=["boot", "entries", "upgrade", "fleet"])
    ap.add_argument("--image", help="raw disk image (default: newest image/out/jaco-*-x86_64.raw)")
    ap.add_argument("--disk-gb", type=int, default=6, help="virtual disk size (grows /var)")
    ap.add_argument("--mask-health-gate", action="store_true",
                    help="entries scenario: mask jaco-health-gate.service on the test entries "
                         "(for an image whose jaco has no `upgrade health-gate`)")
    ap.add_argument("--bundle", help="upgrade and fleet scenarios: a good bundle of a newer "
                    "version (image/build.sh --version 0.2.0)")
    ap.add_argument("--serve-bundle", action="store_true",
                    help="fleet scenario: serve --bundle over HTTP from the host and pass its URL "
                         "(the node fetches it) instead of uploading the file")
    ap.add_argument("--broken-bundle", help="upgrade scenario: a still newer bundle that fails its "
                    "health gate (image/build.sh --version 0.3.0 --test-break-isolation)")
    args = ap.parse_args()

    def on_signal(signum, _frame):
        raise Failed(f"interrupted by signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    image = args.image or default_image()
    log(f"image {image}")
    t0 = time.monotonic()
    try:
        scenarios = {"boot": scenario_boot, "entries": scenario_entries,
                     "upgrade": scenario_upgrade, "fleet": scenario_fleet}
        scenarios[args.scenario](image, args)
    except Failed as e:
        log(f"FAIL: {e}")
        return 1
    finally:
        log(f"wall time {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
