"""The staging mount: a version's tree made writable, committed as the next version (DESIGN §5).

tree.py      the overlay: the base version's tree plus the changes, addressed by inode
journal.py   the append-only log of tree operations that makes the changes survive a crash
upper.py     the written contents, one local file per inode
fs.py        StagingView: the overlay served through the view protocol (namespace.py)
session.py   a session on disk: start, resume, status, commit, abort
"""
