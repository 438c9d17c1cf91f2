import asyncio
from test_digests_cog import *  # noqa

async def test_debug(world):
    import time
    t=time.time()
    await world.env.advance_time(600)
    print("600s took", time.time()-t)
    for r in world.env._work.callbacks:
        print("CB", r.label, r.when)
    for task in world.env._work.tasks:
        if not task.done():
            print("TASK", task.get_name(), task.get_coro())
