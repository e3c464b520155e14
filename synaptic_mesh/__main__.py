"""``python -m synaptic_mesh`` is the ``synaptic-mesh`` command."""

from synaptic_mesh.runtime.cli import main

raise SystemExit(main())
