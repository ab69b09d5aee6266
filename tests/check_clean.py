"""Fail when a notebook under the given folder stores outputs, execution counts or stray metadata."""
import json, sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else 'nbs')
bad = []
for p in sorted(root.rglob('*.ipynb')):
    if '.ipynb_checkpoints' in p.parts: continue
    try: nb = json.loads(p.read_text(encoding='utf-8'))
    except json.JSONDecodeError as e:
        bad.append(f'{p}: not valid JSON ({e})'); continue
    for i, c in enumerate(nb.get('cells', [])):
        if c.get('cell_type') != 'code': continue
        if c.get('outputs') or c.get('execution_count') is not None:
            bad.append(f'{p}: cell {i} has stored outputs')
        extra = set(c.get('metadata', {})) - {'tags'}
        if extra: bad.append(f'{p}: cell {i} has metadata {sorted(extra)}')
if bad:
    print('\n'.join(bad)); print("Run 'make clean-nbs' and commit the cleaned notebooks.")
    sys.exit(1)
print(f'{root}: notebooks clean')
