"""`python -m hive.voiceid ...`: see hive/voiceid/commands.py."""

from hive.voiceid.commands import run

run()
