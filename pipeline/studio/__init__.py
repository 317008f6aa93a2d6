"""The app's services: the only code that knows workspaces, their tokens, uploads, quotas, run history and what
the pages show. The pages (pages/) call these functions and draw; the engine below knows none of this.

Nothing here imports Streamlit, or TensorFlow at import time: the tests call these functions directly.

    hosting.py         how this server is set up: the data root, sample datasets, the caps that protect it
    workspaces.py      one browser session's folder, named by an unguessable token
    expiry.py          idle workspaces removed after their time to live
    server_folders.py  folders on the server a session may use (inside the data root, never the workspaces)
    quotas.py          disk use: one workspace's quota and the server's budget
    uploads.py         uploaded files and zips, saved and unpacked safely
    datasets.py        the workspace's current dataset, its decisions (drop, relabel), advice about it
    label_check.py     likely mistakes and the dataset map, from one fetch of the bottlenecks
    next_run.py        the settings the next run will use
    launch.py          starting a run: checks, its folder, the app's queue
    run_history.py     a workspace's runs: list, find, summarize, compare
    predict_zip.py     predictions for an uploaded zip of photos, kept as a CSV
"""
