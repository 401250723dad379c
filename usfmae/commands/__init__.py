"""The entry points' bodies, one module per command, each with `main(argv=None) -> int`.

`usfmae COMMAND` (usfmae/cli.py) and the thin scripts in launch/ and preprocessing/ both call these, so an
installed wheel runs them without the source tree. Kept free of imports: `python -m usfmae.commands.pretrain`
(what `usfmae pretrain --nproc N` has the deepspeed launcher run) must not find the module already imported.
"""
