"""The interaction patterns, one concept per module.

- :mod:`.request_reply`: ``ask`` and the node's reply inbox.
- :mod:`.pubsub`: ``publish``, ``@subscribe``, dynamic ``subscribe``.
- :mod:`.pipeline` (spec and ``feed``), :mod:`.pipeline_run` (the running
  side), :mod:`.pipeline_worker` (a worker's item loop), :mod:`.credit`
  (back-pressure), :mod:`.feeder` (a streaming producer) on first-stage credit
  leases: :mod:`.pipeline_lease` (lent) and :mod:`.pipeline_producer` (held).
- :mod:`.bus`: a group where every member hears every other member.
- :mod:`.survey` (``survey``, ``@respond``) and :mod:`.consensus` (decisions).
- :mod:`.hotline` (opening and answering) and :mod:`.line` (one end of a line).
- :mod:`.lowering`: how each pattern picks its generic or a native lowering;
  :mod:`.attach`: what patterns keep per actor and per incarnation.

The public names are re-exported by ``synaptic_mesh``; this package imports
nothing itself, so ``synaptic_mesh.actors`` can use its modules freely.
"""
