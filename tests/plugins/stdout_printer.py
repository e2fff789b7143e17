"""A badly behaved apprise plugin: it writes to stdout in every way a plugin could."""

import os
import sys

from apprise.decorators import notify


@notify(on="printer", name="Test plugin that prints to stdout")
def printer(body, title="", notify_type="info", *args, **kwargs):
    print("PRINTED TO STDOUT:", title)
    sys.stdout.flush()
    os.write(1, b"RAW WRITE TO FD 1\n")
    os.system("echo CHILD PROCESS WRITES TO STDOUT")
    return True
