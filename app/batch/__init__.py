"""``python -m app batch``: bulk cutouts on Ray Data (listing, the per-actor worker, the manifest, the job).

Only the batch command imports this package; ``listing`` and ``manifest`` need pyarrow, ``job``
needs Ray, and nothing else in the app imports either.
"""
