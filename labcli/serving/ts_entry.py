"""The module-level `handle(data, context)` TorchServe calls in a handler file, around a service object.

TorchServe imports the handler file of a .mar and calls its `handle`; the service initializes itself
on the first call (context.system_properties["model_dir"] holds the .mar's files).
"""


def entry(service):
    """`handle` for a service with initialize(context) and handle(data, context)."""

    def handle(data, context):
        if not getattr(service, "initialized", False):
            service.initialize(context)
        if data is None:
            return None
        return service.handle(data, context)

    return handle
