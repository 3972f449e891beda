"""The gin grid: one folder per axis (arch/, objective/, size/, mesh/, run/, experiments/).

Installed as package data so `objectax train --gin_file=run/quickstart.gin` works from any
directory: this folder is always on gin's search path.
"""
import os

GIN_DIR = os.path.dirname(os.path.abspath(__file__))
