"""What the study runner keeps on disk so that nothing is replaced, mixed or redone.

* ``<output>/experiment.json``: the experiment's identity (:meth:`ExperimentSpec.identity`),
  written before anything runs. A run with another identity is refused unless ``--overwrite``
  (:func:`claim_output_folder`), which then removes what the old experiment left and the new one
  will not write again (its rows, pictures, plots, results).
* ``<run folder>/run.json``: one :class:`RunRecord` per training run (pre-training, each row and
  seed, Zero-DCE++): the identity of the training (everything that changes its weights), its
  state ("started" or "trained"), what it produced (weights, w, trajectory, seconds) and its
  evaluations, each with the identity of that evaluation (dataset, degradation, overrides,
  bootstrap samples). A rerun keeps a trained run and its evaluations whose identities match,
  resumes a started run of the same identity from its last checkpoint, and starts afresh (the
  folder emptied first) anything else.
"""

import json
import logging
import os
import re

from ..utils.io import atomic_write_json, remove_tree

__all__ = ["RunRecord", "claim_output_folder", "identity_differences", "EXPERIMENT_FILE", "RUN_FILE",
           "OUTPUTS"]

logger = logging.getLogger(__name__)

EXPERIMENT_FILE = "experiment.json"
RUN_FILE = "run.json"
#: Files and folders of an output folder that the runner writes at the end of each run (tables,
#: plots, pictures): an experiment that replaces another removes them first.
OUTPUTS = ("results.json", "results.md", "ap.png", "severity.png", "w_trajectory.png", "pictures")
# Run folders of older versions, which had no run.json: rows, rows of a seed, Zero-DCE++.
_OLD_RUN_FOLDER = re.compile(r"^(pretrained|finetuned|nlb|wnlb|zero_dce)(_seed\d+)?$")


def _read_json(path):
    """The JSON object in ``path``; None when the file is missing or unreadable (a cut write)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        logger.warning(f"Ignoring {path}: not readable as JSON ({e})")
        return None
    return data if isinstance(data, dict) else None


def _canonical(obj):
    """``obj`` as JSON would give it back (tuples as lists, float keys as strings), for comparing."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def identity_differences(old, new):
    """``"seeds [0] -> [5], finetune_iters 60 -> 2"``: the fields in which two identities differ."""
    old, new = _canonical(old or {}), _canonical(new)
    keys = [k for k in dict.fromkeys(list(new) + list(old)) if old.get(k, "<unset>") != new.get(k, "<unset>")]
    return ", ".join(f"{k} {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}" for k in keys)


def _recorded_identity(folder):
    """The experiment identity recorded in ``folder`` (experiment.json, else results.json's meta).

    Returns:
        tuple[str or None, dict or None]: the file it was read from and the identity; (None,
        None) when the folder holds no experiment; (file, None) when it holds one whose identity
        was not recorded (an older layout).
    """
    for name in (EXPERIMENT_FILE, "results.json"):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            data = _read_json(path) or {}
            identity = data.get("identity") if name == EXPERIMENT_FILE else (data.get("meta") or {}).get("identity")
            return path, identity if isinstance(identity, dict) else None
    if os.path.isdir(folder) and any(_OLD_RUN_FOLDER.match(n) for n in os.listdir(folder)):
        return folder, None  # run folders of a version that recorded nothing
    return None, None


def claim_output_folder(folder, identity, planned_runs, overwrite=False, dry_run=False):
    """Make ``folder`` the experiment ``identity``'s, refusing to replace another one's.

    Call with the folder's lock held. The same experiment (equal identity) may always continue
    there. Another one, or an older layout without an identity, is refused unless ``overwrite``;
    then everything the runner wrote for the old experiment that the new one does not plan is
    removed (run folders not in ``planned_runs``, results, plots, pictures); planned run folders
    stay, and each is kept or started afresh by its own :class:`RunRecord`.

    Args:
        folder (str): the output folder.
        identity (dict): the new experiment's identity.
        planned_runs (iterable of str): names of the run folders the new experiment uses.
        overwrite (bool): replace another experiment.
        dry_run (bool): only check (nothing is written or removed).

    Raises:
        FileExistsError: another experiment's results are there and ``overwrite`` is False; the
            message names the file and the fields that differ.
    """
    path, old = _recorded_identity(folder)
    same = path is not None and old is not None and _canonical(old) == _canonical(identity)
    if path is not None and not same:
        if not overwrite:
            what = ("an older results layout without a recorded experiment" if old is None
                    else f"another experiment (differs in {identity_differences(old, identity)})")
            raise FileExistsError(f"{path} holds the results of {what}; choose another --output, or pass "
                                  "--overwrite to replace them (finished runs that the new experiment would "
                                  "repeat exactly are kept)")
        if not dry_run:
            _remove_stale(folder, set(planned_runs))
    if not dry_run:
        atomic_write_json(os.path.join(folder, EXPERIMENT_FILE), {"identity": identity}, indent=1, default=str)


def _remove_stale(folder, planned):
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        is_run = os.path.isdir(path) and (os.path.isfile(os.path.join(path, RUN_FILE)) or _OLD_RUN_FOLDER.match(name))
        if name in OUTPUTS or (is_run and name not in planned):
            logger.info(f"--overwrite: removing {path} (written for the experiment this one replaces)")
            remove_tree(path)


class RunRecord:
    """The record of one training run and its evaluations, ``<folder>/run.json``.

    Args:
        folder (str): the run's folder.
        identity (dict): everything that changes the run's weights (see
            :func:`wnlb_d2.experiment.runner` for what each run puts there).
        write (bool): whether this process writes records (the main process).
    """

    def __init__(self, folder, identity, write=True):
        self.folder = folder
        self.identity = _canonical(identity)
        self.write = write
        self.path = os.path.join(folder, RUN_FILE)
        old = _read_json(self.path)
        self.matches = bool(old) and old.get("identity") == self.identity
        self.data = old if self.matches else {"identity": self.identity, "state": "new", "evaluations": {}}

    @property
    def trained(self):
        """What the finished training produced (``weights``, ``seconds``, ``w``, ...), or None."""
        return self.data.get("train") if self.data.get("state") == "trained" else None

    def start(self, can_resume=True):
        """Prepare the folder for training; returns whether to resume from its last checkpoint.

        A run of the same identity that was started and not finished resumes (when the family
        ``can_resume``, else it starts afresh); anything else in
        the folder (another identity's run, an older layout) is removed first, so nothing of it
        (checkpoints, metrics.json lines, evaluations) mixes into this run.
        """
        resume = can_resume and self.matches and self.data.get("state") == "started"
        if not resume and os.path.exists(self.folder):
            if os.listdir(self.folder):
                logger.info(f"{self.folder}: starting afresh (it held "
                            f"{'an unfinished run' if self.matches else 'another run'})")
            if self.write:
                remove_tree(self.folder)
        if self.write:
            os.makedirs(self.folder, exist_ok=True)
        if not resume:
            self.data = {"identity": self.identity, "state": "started", "evaluations": {}}
            self._save()
        return resume

    def finish(self, **train):
        """Record the finished training (JSON-able values: weights path, seconds, w, trajectory)."""
        self.data["state"] = "trained"
        self.data["train"] = _canonical(train)
        self._save()

    def evaluation(self, name, identity):
        """The recorded result of evaluation ``name`` if it was made with ``identity``; else None."""
        entry = self.data.get("evaluations", {}).get(name)
        if entry and entry.get("identity") == _canonical(identity):
            return entry["result"]
        return None

    def add_evaluation(self, name, identity, result):
        self.data.setdefault("evaluations", {})[name] = {"identity": _canonical(identity), "result": result}
        self._save()

    def _save(self):
        if self.write:
            os.makedirs(self.folder, exist_ok=True)
            atomic_write_json(self.path, self.data, indent=1, default=float)
