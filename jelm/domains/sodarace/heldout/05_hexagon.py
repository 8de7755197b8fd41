"""Hexagon tumbler: a six-sided rim whose edges squeeze in turn, braced by three
long diagonals, so the polygon flops over from face to face."""

import math

from jelm.programs.walker_api import walker_creator

sideCount = 6
circumRadius = 5.0
squeezeStrength = 9.0


def make_walker():
    walkerMaker = walker_creator()
    liftToGround = circumRadius * math.cos(math.pi / sideCount)
    cornerList = []
    for cornerIndex in range(sideCount):
        theta = math.pi / sideCount * (2 * cornerIndex - 1) - math.pi / 2
        cornerX = circumRadius * math.cos(theta)
        cornerY = liftToGround + circumRadius * math.sin(theta)
        cornerList.append(walkerMaker.add_joint(cornerX, cornerY))
    hubJoint = walkerMaker.add_joint(0.0, liftToGround)
    for cornerIndex, corner in enumerate(cornerList):
        nextCorner = cornerList[(cornerIndex + 1) % sideCount]
        edgeTiming = (1.0 - cornerIndex / sideCount) % 1.0
        walkerMaker.add_muscle(corner, nextCorner, False, squeezeStrength, edgeTiming)
        walkerMaker.add_muscle(hubJoint, corner)
    return walkerMaker.get_walker()
