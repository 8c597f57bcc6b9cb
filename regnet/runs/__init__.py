"""The run-folder contract (docs/run-folder.md): what the engine writes through and every reader reads through.

- ``layout``: the file names, the run-id rule, the checkpoint a reader loads, the runs-root containment check.
- ``atomic``: the one atomic write (temp file in the same folder, fsync of file and folder).
- ``read``: tolerant readers of status.json, config.yaml and metrics.jsonl.
- ``process``: process liveness that survives pid reuse (pid + start time).
- ``state``: every run state, defined once; a run's state as readers report it (``died``, a forced stop's
  ``stopped``) and its best (the checkpointed best).
- ``summary``: a run's summary (identity, state, progress, best and final metrics, config, timing) and the
  comparison table's row, which every listing, comparison and page uses.
- ``annotations``: a run's tags and note (the user's, never the engine's).
- ``trash``: deleting a run into ``<runs root>/.trash/`` and restoring it.

Nothing here imports torch, so the dashboard lists runs without loading it.
"""
from .atomic import atomic_write, atomic_write_json, atomic_write_text, remove_stale_temps
from .annotations import (MAX_TAGS, NOTE_CAP, TAG_RULE, check_note, clean_tags, parse_tags, read_note, read_tags,
                          write_annotations, write_note, write_tags)
from .layout import (ARTIFACTS, CHECKPOINT_NAMES, CHECKPOINTS, CONFIG, FINAL_EVAL, LAUNCH_SUFFIXES, LAUNCHES, LOG,
                     CHANNEL_INDEX, METRICS, NOTE, PROBE_FEATURES, PROBES, REGULATOR, RUN_ID_RULE, STATUS, STOP, STUDY, STUDY_MEMBERS, TAGS, TRASH,
                     RefusedPath, check_inside, check_run_id, checkpoint_file, checkpoint_path, is_inside, is_run_id,
                     new_run_id, run_dir_in, scan_runs, snapshot_epochs, snapshot_file, snapshot_name)
from .process import owner_alive, process_alive, process_identity, process_start
from .read import (DamagedFile, MetricsChunk, read_all_metrics, read_config_dict, read_json_object, read_metrics,
                   read_metrics_since, read_regular, read_regulator, read_status, read_yaml_mapping, tail_text)
from .state import (ACTIVE_STATES, DIED, FAILED_STATES, NO_BEST, REFUSED, RESUMABLE_STATES, STARTING, STARTING_OR_ACTIVE, STATES,
                    STOPPED, STOPPING, UNKNOWN, Best, best_of, finite, reported_state, stop_requested_at)
from .summary import (COMPARED_METRICS, EpochMetrics, RunSummary, comparison_row, epoch_metrics, read_epoch_metrics,
                      read_summary, recorded_summary, settle)
from .trash import Trashed, restore_run, trash_run, trashed_runs

__all__ = [name for name in dir() if not name.startswith("_")]
