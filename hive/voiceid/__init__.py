"""One-shot speaker identification and verification with a trained hive model.

The speaker store and its math (hive/voiceid/store.py), decision thresholds
(hive/voiceid/thresholds.py) and the `python -m hive.voiceid` commands
(hive/voiceid/commands.py).
"""

from hive.voiceid.store import (DEFAULT_THRESHOLD, VoiceIdError, check_model,  # noqa: F401
                                enroll, identify, load_store, new_store, save_store, scores,
                                verify)
from hive.voiceid.thresholds import (calibrate, model_threshold,  # noqa: F401
                                     parse_threshold, save_model_threshold,
                                     threshold_from_report)
