"""The fork server's last preload (runner/processes.PRELOAD): once the libraries before it are imported, their
objects are moved out of the garbage collector's reach (`gc.freeze`).

Every job forked from the server inherits them. Without this, the first full collection in each job (which
the job's own imports soon trigger) walked all of those objects; with it, the collector only ever looks at what
the job itself makes. Nothing of this project but this module (and its package) is imported in the server, so
each job still imports the project's code as the files are when it starts.
"""
import gc

gc.freeze()
