"""The intermediate representation patterns and the compiler both speak: block grids and block
sets (``ir/blocks.py``) and mask programs with their reference evaluator (``ir/program.py``).
The bottom of the package (above ``utils``): nothing here imports another spattern layer."""
