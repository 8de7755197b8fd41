"""Quadruped written against a tiny wrapper class instead of the raw creator."""

from jelm.programs.walker_api import walker_creator


class Body:
    """Keeps the creator and offers short verbs for the parts of an animal."""

    def __init__(self):
        self.wc = walker_creator()

    def point(self, x, y):
        return self.wc.add_joint(x, y)

    def rigid(self, *points):
        for k in range(len(points) - 1):
            self.wc.add_muscle(points[k], points[k + 1])

    def motor(self, a, b, strength, timing):
        self.wc.add_muscle(a, b, strength, timing)

    def limb(self, shoulder, hip, reach, timing):
        knee = self.point(hip[0] + reach, hip[1] - 2.5)
        paw = self.point(hip[0] - 0.5 * reach, 0.0)
        self.rigid(hip, knee, paw)
        self.motor(shoulder, knee, 7.5, timing)
        self.motor(hip, paw, 3.5, (timing + 0.75) % 1.0)

    def finish(self):
        return self.wc.get_walker()


def make_walker():
    body = Body()
    nape = body.point(9.0, 8.0)
    rump = body.point(0.0, 7.5)
    front_hip = body.point(8.0, 5.0)
    back_hip = body.point(1.0, 5.0)
    belly = body.point(4.5, 5.2)
    body.rigid(rump, nape, front_hip, belly, back_hip, rump)
    body.rigid(rump, belly, nape)
    body.rigid(nape, body.point(11.0, 9.5), front_hip)
    body.limb(rump, back_hip, 1.0, 0.0)
    body.limb(nape, front_hip, 1.0, 0.0)
    body.limb(belly, back_hip, -1.2, 0.25)
    body.limb(belly, front_hip, -1.2, 0.25)
    return body.finish()
