# sandpit Python executor: one long-lived IPython shell driven by the agent.
#
# Protocol (see crates/agent/src/interpreter/executor.rs): requests arrive on fd 3 and events
# leave on fd 4, one JSON object per line. stdout/stderr writes of the code become events as
# they happen; writes straight to fd 1/2 (subprocesses) reach the agent through the pipes.
import base64
import json
import os
import signal
import sys
import threading

EVENTS_FD = 4
# Subprocesses of the code must not inherit the protocol pipes.
os.set_inheritable(3, False)
os.set_inheritable(EVENTS_FD, False)


def hide_event_channel():
    """Non-dumpable: other processes of the sandbox (same uid, no CAP_SYS_PTRACE) can no longer
    open /proc/<pid>/fd/4 to forge events. Code run here still can (it shares this process);
    the agent validates every line and drops the rest without logging it."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE, 0
    except Exception:
        pass


hide_event_channel()
_lock = threading.Lock()


streams = []


def emit(event):
    if event["type"] not in ("stdout", "stderr"):
        for stream in streams:
            stream.flush()
    data = (json.dumps(event, ensure_ascii=False, default=str) + "\n").encode("utf-8", "replace")
    with _lock:
        # An interrupt must not cut an event line in half.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            view = memoryview(data)
            while view:
                n = os.write(EVENTS_FD, view)
                view = view[n:]
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def import_shell_fast():
    """InteractiveShell without running IPython/__init__.py, which pulls in the terminal UI
    (prompt_toolkit) a kernel never uses: ~100 ms of every cold start. The rest of that
    __init__ runs on the first attribute the code asks of the `IPython` module."""
    import importlib.util
    import types

    spec = importlib.util.find_spec("IPython")
    if spec is None or spec.origin is None or not spec.submodule_search_locations:
        raise ImportError("No module named 'IPython'")
    stub = types.ModuleType("IPython")
    stub.__path__ = list(spec.submodule_search_locations)
    stub.__spec__ = spec
    stub.__file__ = spec.origin
    stub.__package__ = "IPython"
    stub.__loader__ = spec.loader

    def load_rest(name):
        if name.startswith("__") and name != "__version__":
            raise AttributeError(name)
        stub.__dict__.pop("__getattr__", None)
        with open(spec.origin, "rb") as f:
            exec(compile(f.read(), spec.origin, "exec"), stub.__dict__)
        return getattr(stub, name)

    stub.__getattr__ = load_rest
    sys.modules["IPython"] = stub
    from IPython.core.getipython import get_ipython

    stub.get_ipython = get_ipython
    from IPython.core.interactiveshell import InteractiveShell

    return InteractiveShell


def import_shell():
    try:
        return import_shell_fast()
    except ImportError:
        raise
    except Exception:  # noqa: BLE001 - an IPython this trick does not fit: import it plainly
        for name in [n for n in sys.modules if n == "IPython" or n.startswith("IPython.")]:
            del sys.modules[name]
        from IPython.core.interactiveshell import InteractiveShell

        return InteractiveShell


try:
    InteractiveShell = import_shell()
    from IPython.core.displayhook import DisplayHook
    from IPython.core.displaypub import DisplayPublisher
except Exception as e:  # noqa: BLE001 - any import failure means "no usable Python"
    emit({"type": "unavailable", "message": "IPython is not installed: %s" % e})
    sys.exit(3)

import io


class Stream(io.TextIOBase):
    """sys.stdout / sys.stderr: complete lines become events at once; a partial line waits
    at most FLUSH_DELAY (so print(a, b) is one event, and output stays live)."""

    FLUSH_DELAY = 0.01

    def __init__(self, name, fd):
        self.name = name
        self._fd = fd
        self._pending = []
        self._cond = threading.Condition()
        threading.Thread(target=self._flusher, daemon=True).start()

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError("write() argument must be str, not %s" % type(text).__name__)
        if text:
            with self._cond:
                self._pending.append(text)
                if "\n" in text:
                    self._flush_locked()
                else:
                    self._cond.notify()
        return len(text)

    def _flush_locked(self):
        if self._pending:
            text = "".join(self._pending)
            self._pending = []
            emit({"type": self.name, "text": text})

    def flush(self):
        with self._cond:
            self._flush_locked()

    def _flusher(self):
        import time
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
            time.sleep(self.FLUSH_DELAY)
            self.flush()

    def writable(self):
        return True

    @property
    def buffer(self):
        return BinaryStream(self)

    def isatty(self):
        return False

    def fileno(self):
        return self._fd

    @property
    def encoding(self):
        return "utf-8"

    @property
    def errors(self):
        return "replace"


class BinaryStream(io.RawIOBase):
    """sys.stdout.buffer: bytes written are decoded (UTF-8) into the text stream."""

    def __init__(self, text):
        self._text = text

    def writable(self):
        return True

    def write(self, data):
        self._text.write(bytes(data).decode("utf-8", "replace"))
        return len(data)

    def flush(self):
        self._text.flush()


BINARY_MIME = ("image/png", "image/jpeg", "application/pdf")


def bundle(data):
    out = {}
    for mime, value in (data or {}).items():
        if isinstance(value, (bytes, bytearray)):
            if mime in BINARY_MIME:
                value = base64.b64encode(value).decode("ascii")
            else:
                value = bytes(value).decode("utf-8", "replace")
        elif mime in BINARY_MIME and isinstance(value, str):
            value = value.replace("\n", "")
        out[mime] = value
    return out


def emit_result(data, metadata=None):
    data = bundle(data)
    plain = data.get("text/plain")
    if len(data) > 1 and isinstance(plain, str) and plain.startswith("<") and plain.endswith(" object>"):
        del data["text/plain"]
    if data:
        emit({"type": "result", "data": data, "metadata": metadata or {}})


class Hook(DisplayHook):
    """The last expression's value: a result event instead of `Out[n]:` on stdout."""

    def compute_format_data(self, result):
        data, md = super().compute_format_data(result)
        if isinstance(result, (dict, list)) and "application/json" not in data:
            try:
                json.dumps(result)
                data["application/json"] = result
            except (TypeError, ValueError):
                pass
        return data, md

    def start_displayhook(self):
        pass

    def write_output_prompt(self):
        pass

    def write_format_data(self, format_dict, md_dict=None):
        emit_result(format_dict, md_dict)

    def finish_displayhook(self):
        pass


class Publisher(DisplayPublisher):
    """display(): one result event per call."""

    def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kw):
        emit_result(data, metadata)

    def clear_output(self, wait=False):
        pass


from traitlets.config import Config

config = Config()
# History lives in memory: no SQLite file shared by contexts, no write per run.
config.HistoryManager.enabled = False
# The completer's jedi import (~30 ms) serves tab completion only: hidden while the shell is
# made; the code can import jedi afterwards.
sys.modules.setdefault("jedi", None)
try:
    shell = InteractiveShell.instance(config=config, colors="NoColor")
finally:
    if sys.modules.get("jedi", 0) is None:
        del sys.modules["jedi"]
shell.ast_node_interactivity = "last_expr"
hook = Hook(shell=shell, cache_size=shell.cache_size)
shell.displayhook = hook
shell.display_trap.hook = hook
shell.display_pub = Publisher(shell=shell, parent=shell)


def show_traceback(etype, evalue, stb):
    emit({
        "type": "error",
        "ename": getattr(etype, "__name__", str(etype)),
        "evalue": str(evalue),
        "traceback": list(stb),
    })


shell._showtraceback = show_traceback

import warnings

warnings.filterwarnings("ignore", message=".*non-interactive.*")
warnings.filterwarnings("ignore", message=".*Matplotlib is currently using agg.*")


def capture_figures():
    """Every open matplotlib figure becomes a PNG result (so plt.show() is not needed)."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return
    try:
        numbers = plt.get_fignums()
        for n in numbers:
            fig = plt.figure(n)
            buf = io.BytesIO()
            fig.savefig(buf, format="png", bbox_inches="tight")
            emit_result({"image/png": buf.getvalue()})
        if numbers:
            plt.close("all")
    except Exception as e:  # noqa: BLE001 - a broken figure must not kill the context
        emit({"type": "stderr", "text": "sandpit: could not capture figure: %s\n" % e})


def sandpit_show(*args, **kwargs):
    capture_figures()


sandpit_show._sandpit = True


class PyplotHook:
    """Replaces pyplot.show when pyplot is imported, so plt.show() emits the figures at once
    (output keeps its order) and never blocks."""

    def find_spec(self, name, path=None, target=None):
        if name != "matplotlib.pyplot":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        original = loader.exec_module

        def exec_module(module):
            original(module)
            module.show = sandpit_show

        loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, PyplotHook())


def idle_sigint(signum, frame):
    # An interrupt that arrives between runs is dropped.
    pass


# During a run SIGINT has Python's own handler (KeyboardInterrupt, and no frame of this file
# in the traceback); between runs it is dropped.
signal.signal(signal.SIGINT, idle_sigint)


def configure(req):
    cwd = req.get("cwd")
    if cwd:
        try:
            os.chdir(cwd)
        except OSError as e:
            emit({"type": "error", "ename": type(e).__name__, "evalue": "cwd %s: %s" % (cwd, e.strerror), "traceback": []})
            return
    env = req.get("env") or {}
    if req.get("replace"):
        for key in [k for k in os.environ if k not in env]:
            del os.environ[key]
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def run(req):
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        shell.run_cell(req.get("code", ""), store_history=True)
    except KeyboardInterrupt:
        show_traceback(KeyboardInterrupt, KeyboardInterrupt(), ["KeyboardInterrupt"])
    finally:
        signal.signal(signal.SIGINT, idle_sigint)
    capture_figures()
    sync = req.get("sync")
    if isinstance(sync, int):
        # Through the original pipes (the code may have redirected fd 1/2): the agent ends the
        # run once these arrive, so subprocess output written before them is not lost.
        for fd in SYNC_FDS:
            try:
                os.write(fd, b"\0sandpit-sync:%d\0" % sync)
            except OSError:
                pass


SYNC_FDS = (os.dup(1), os.dup(2))


def main():
    sys.stdout = Stream("stdout", 1)
    sys.stderr = Stream("stderr", 2)
    streams.extend([sys.stdout, sys.stderr])
    requests = os.fdopen(3, "rb")
    emit({"type": "ready"})
    while True:
        line = requests.readline()
        if not line:
            return
        try:
            req = json.loads(line)
        except ValueError:
            continue
        op = req.get("op")
        if op == "configure":
            configure(req)
        elif op == "run":
            try:
                run(req)
            except KeyboardInterrupt:
                # Landed just after the code ended: the run is over anyway.
                signal.signal(signal.SIGINT, idle_sigint)
        emit({"type": "done", "execution_count": shell.execution_count - 1 if op == "run" else 0})


main()
