"""The foundation every other floor stands on; it imports nothing above it.

errors (the exception types and exit codes' meaning), files (paths, hashes, atomic writes), records (the
one exclusive record log of every stage), schema (declared ranges, choices and operational fields),
think (the one `<think>` format), contract (what the runner hands a stage and gets back), unfinished
(items a failed model call left undone), badinput (the one strict-or-skip rule for bad records).
"""
