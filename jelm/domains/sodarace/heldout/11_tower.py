"""Tower: four storeys of braced frame on two stilts. Sizes are written in
centimetres and scaled to walker units (1 unit = 50 cm) as joints are placed."""

from jelm.programs.walker_api import walker_creator

CM = 1 / 50.0
WIDTH_CM = 200.0
STOREY_CM = 175.0
STILT_CM = 150.0
STOREYS = 4


def make_walker():
    wc = walker_creator()
    feet = [wc.add_joint(-50 * CM, 0.0), wc.add_joint((WIDTH_CM + 50) * CM, 0.0)]
    floors = []
    for level in range(STOREYS + 1):
        height = (STILT_CM + level * STOREY_CM) * CM
        floors.append((wc.add_joint(0.0, height), wc.add_joint(WIDTH_CM * CM, height)))
    for level, (west, east) in enumerate(floors):
        wc.add_muscle(west, east)
        if level:
            below_w, below_e = floors[level - 1]
            wc.add_muscle(below_w, west)
            wc.add_muscle(below_e, east)
            wc.add_muscle(below_w, east) if level % 2 else wc.add_muscle(below_e, west)
    ground_w, ground_e = floors[0]
    wc.add_muscle(feet[0], ground_w)
    wc.add_muscle(feet[1], ground_e)
    wc.add_muscle(feet[0], ground_e, False, 8.0, 0.0)
    wc.add_muscle(feet[1], ground_w, False, 8.0, 0.5)
    wc.add_muscle(feet[0], floors[1][0], False, 6.0, 0.55)
    wc.add_muscle(feet[1], floors[1][1], False, 6.0, 0.8)
    return wc.get_walker()
