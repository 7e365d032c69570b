"""Export from the GUI: annotate (or a compare report) in a worker thread, with a progress dialog that cancels."""
from __future__ import annotations

import threading

from app.qt import QtCore, QtWidgets

FORMATS = ("csv", "json", "pts", "obj", "video")
OVERWRITE = "overwrite existing files"


class ExportWorker(QtCore.QThread):
    progress = QtCore.Signal(int, int)
    done = QtCore.Signal(str)
    failed = QtCore.Signal(str)

    def __init__(self, kind: str, source: str, methods: list[str], out: str, formats: list[str], force: bool,
                 max_faces: int | None = None) -> None:
        super().__init__()
        self.kind, self.source, self.methods, self.out = kind, source, methods, out
        self.max_faces = max_faces  # the toolbar's limit, as the live view tracks
        self.formats, self.force = formats, force
        self.cancel = threading.Event()

    def run(self) -> None:
        try:
            def prog(i, n):
                self.progress.emit(i, n or 0)

            if self.kind == "compare":
                from engine.evaluation.compare import compare

                res = compare(self.source, self.methods, self.out, force=self.force, progress=prog,
                              cancelled=self.cancel.is_set, max_faces=self.max_faces)
                if res.get("partial"):
                    self.done.emit(f"compare report cancelled after {res['frames']} frames -> {self.out}/report.md "
                                   "(partial: the report covers only these frames)")
                else:
                    self.done.emit(f"compare report: {res['frames']} frames -> {self.out}/report.md")
            else:
                from engine.export.annotate import annotate

                s = annotate(self.source, self.methods, self.out, self.formats, force=self.force, progress=prog,
                             cancelled=self.cancel.is_set, max_faces=self.max_faces)
                state = "cancelled after" if s.cancelled else "exported"
                partial = " (partial: the files hold only these frames)" if s.cancelled else ""
                self.done.emit(f"{state} {s.frames} frames ({s.faces} faces) -> {self.out}{partial}")
        except FileExistsError as e:  # the engine's message names the CLI's --force; here it is a checkbox
            files = str(e).split(" already exist")[0]
            self.failed.emit(f"{files} already exist: tick \"{OVERWRITE}\" in the export dialog to replace them")
        except Exception as e:  # shown as a message, never as a traceback
            self.failed.emit(str(e) or type(e).__name__)


class ExportDialog(QtWidgets.QDialog):
    """Choose formats and a folder; ``kind`` is "annotate" or "compare"."""

    def __init__(self, kind: str, methods: list[str], parent=None) -> None:
        super().__init__(parent)
        self.kind = kind
        self.setWindowTitle("Export compare report" if kind == "compare" else "Export annotations")
        lay = QtWidgets.QFormLayout(self)
        self.folder = QtWidgets.QLineEdit()
        browse = QtWidgets.QPushButton("…")
        browse.clicked.connect(self._browse)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.folder)
        row.addWidget(browse)
        lay.addRow("output folder", row)
        lay.addRow("methods", QtWidgets.QLabel(", ".join(methods)))
        self.checks = {}
        if kind != "compare":
            box = QtWidgets.QHBoxLayout()
            for f in FORMATS:
                c = QtWidgets.QCheckBox(f)
                c.setChecked(f in ("csv", "json"))
                self.checks[f] = c
                box.addWidget(c)
            lay.addRow("formats", box)
        self.force = QtWidgets.QCheckBox(OVERWRITE)
        lay.addRow("", self.force)
        self.problem = QtWidgets.QLabel()
        self.problem.setStyleSheet("color:#d32f2f;")
        self.problem.hide()
        lay.addRow("", self.problem)
        buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.Ok | QtWidgets.QDialogButtonBox.Cancel)
        buttons.accepted.connect(self._accept)
        buttons.rejected.connect(self.reject)
        lay.addRow(buttons)

    def _accept(self) -> None:
        """OK with nothing to export to says so in the dialog instead of closing it silently."""
        if not self.folder.text().strip():
            self.problem.setText("choose an output folder first")
            self.problem.show()
            return
        if self.kind != "compare" and not self.formats():
            self.problem.setText("tick at least one format")
            self.problem.show()
            return
        self.accept()

    def _browse(self) -> None:
        d = QtWidgets.QFileDialog.getExistingDirectory(self, "Output folder")
        if d:
            self.folder.setText(d)

    def formats(self) -> list[str]:
        return [f for f, c in self.checks.items() if c.isChecked()]


def run_export(parent, kind: str, source: str, methods: list[str], out: str, formats: list[str], force: bool,
               on_message, max_faces: int | None = None) -> ExportWorker:
    """Start the export with a modal-less progress dialog; returns the worker (kept alive by the caller)."""
    worker = ExportWorker(kind, source, methods, out, formats, force, max_faces)
    dlg = QtWidgets.QProgressDialog("Exporting…", "Cancel", 0, 0, parent)
    dlg.setWindowTitle("Export")
    dlg.setMinimumDuration(0)
    dlg.setAutoClose(False)
    dlg.setAutoReset(False)

    def on_progress(i: int, n: int) -> None:
        if dlg.wasCanceled():
            worker.cancel.set()
            return
        if n and i <= n:
            dlg.setMaximum(n)
            dlg.setValue(i)
        dlg.setLabelText(f"{i} frames processed")

    worker.progress.connect(on_progress)
    dlg.canceled.connect(worker.cancel.set)
    worker.done.connect(lambda msg: (dlg.close(), on_message(msg, False)))
    worker.failed.connect(lambda msg: (dlg.close(), on_message(msg, True)))
    dlg.setValue(0)
    dlg.show()  # painted now, not after minimumDuration or the first progress tick
    QtWidgets.QApplication.processEvents(QtCore.QEventLoop.ExcludeUserInputEvents)
    worker.start()
    worker.dialog = dlg
    return worker
