"""Word lists the corpora are built from: fixed literals, so every corpus is reproducible.

Which prompts are held out never depends on a seed: :func:`split_of` hashes the entity and the
(template, entity) pair, so a held-out prompt is unseen by every model of the zoo, whatever seed
trained it.
"""

from __future__ import annotations

import zlib

# One key in HELDOUT_MODULUS is held out (a CRC-32 residue, stable across runs and machines).
HELDOUT_MODULUS = 5


def is_heldout(key: str, modulus: int = HELDOUT_MODULUS) -> bool:
    """True when ``key`` belongs to the held-out split (about 1 in ``modulus`` keys)."""
    return zlib.crc32(key.encode("utf-8")) % modulus == 0


def split_of(group: str, template: int, entity: str) -> str:
    """"heldout" or "train" for the prompt made of template number ``template`` of ``group``
    filled with ``entity``.

    Held out: every prompt of an entity never seen in training (1 in 5 entities), and, of the
    other entities, 1 in 5 (template, entity) pairs, so a held-out prompt is a new entity or a
    phrasing never seen with that entity. About 36% of the prompts are held out.
    """
    unseen = is_heldout(f"{group}:{entity}") or is_heldout(f"{group}:{template}:{entity}")
    return "heldout" if unseen else "train"


ANIMALS = [
    "giraffe", "zebra", "elephant", "lion", "tiger", "panda", "koala", "kangaroo", "penguin",
    "dolphin", "whale", "otter", "beaver", "fox", "wolf", "bear", "rabbit", "squirrel", "owl",
    "eagle", "parrot", "flamingo", "turtle", "frog", "octopus", "camel", "horse", "goat", "sheep",
    "deer", "moose", "hedgehog", "badger", "seal", "swan", "crab", "bee", "butterfly", "lizard",
    "gorilla",
]
VEGETABLES = [
    "carrots", "potatoes", "broccoli", "spinach", "peas", "beans", "corn", "onions", "peppers",
    "mushrooms", "zucchini", "cabbage", "cauliflower", "pumpkin", "beets", "leeks", "kale",
    "asparagus", "eggplant", "celery", "tomatoes", "lentils", "rice", "noodles", "tofu", "eggs",
    "salmon", "chicken", "sweet potatoes", "turnips",
]
CITIES = [
    "Paris", "Rome", "Tokyo", "Cairo", "Lima", "Oslo", "Vienna", "Prague", "Lisbon", "Madrid",
    "Berlin", "Dublin", "Athens", "Istanbul", "Seoul", "Bangkok", "Sydney", "Toronto", "Boston",
    "Chicago", "Denver", "Nairobi", "Mumbai", "Hanoi", "Havana", "Quito", "Helsinki", "Warsaw",
    "Budapest", "Kyoto", "Florence", "Venice", "Edinburgh", "Montreal", "Santiago", "Marrakesh",
]
PETS = [
    "dog", "cat", "puppy", "kitten", "hamster", "goldfish", "parrot", "rabbit", "turtle", "pony",
    "ferret", "canary", "guinea pig", "mouse", "lizard", "horse", "budgie", "gecko", "tortoise",
    "chinchilla",
]
PET_NAMES = [
    "Max", "Luna", "Bella", "Charlie", "Milo", "Daisy", "Oscar", "Ruby", "Leo", "Coco",
    "Pepper", "Biscuit", "Maple", "Ziggy", "Willow", "Toby", "Olive", "Nala", "Rocky", "Poppy",
]
PLANTS = [
    "fern", "cactus", "rose bush", "tulip", "orchid", "basil plant", "mint plant", "bamboo",
    "ivy", "lily", "daisy", "sunflower", "tomato plant", "lavender", "aloe plant", "bonsai tree",
    "palm tree", "spider plant", "snake plant", "peace lily", "rubber plant", "money tree",
    "jade plant", "geranium",
]
HOBBIES = [
    "painting", "chess", "running", "swimming", "cooking", "drawing", "singing", "knitting",
    "gardening", "dancing", "writing", "reading", "juggling", "cycling", "hiking", "baking",
    "photography", "pottery", "guitar", "piano", "yoga", "climbing", "fishing", "sewing",
    "skating", "tennis", "origami", "woodworking",
]
TOOLS = [
    "hammer", "saw", "drill", "ladder", "knife", "screwdriver", "wrench", "sewing machine",
    "blender", "stove", "lawn mower", "glue gun", "iron", "kettle", "chainsaw", "axe",
    "paint sprayer", "soldering iron", "nail gun", "pressure washer", "toaster", "grater",
]
MEALS = [
    "breakfast", "lunch", "dinner", "a snack", "dessert", "a picnic", "brunch", "a party",
    "a long hike", "a rainy day", "a school lunch box", "a movie night",
]
MEAL_FOODS = [
    "oatmeal with fruit", "scrambled eggs", "a banana", "yogurt with honey", "toast with jam",
    "a vegetable soup", "a cheese sandwich", "rice with beans", "a green salad", "pasta",
    "an apple", "a bowl of cereal", "pancakes", "grilled fish", "a baked potato",
    "a fruit salad", "vegetable curry", "a bowl of noodles", "homemade pizza", "popcorn",
]
NATURE = [
    "the rain", "the snow", "the sea", "the moon", "autumn", "spring", "a river", "the mountains",
    "the wind", "the stars", "the sunrise", "a forest", "the desert", "a storm", "summer",
    "winter", "a garden", "the clouds", "a lake", "the night sky", "a rainbow", "the fog",
    "a waterfall", "the meadow",
]
PLACES = [
    "beach", "mountains", "desert", "countryside", "jungle", "lake", "seaside", "snowy north",
    "island", "forest", "canyon", "big city", "old town", "tropics", "coast", "valley",
]
SUBJECTS = [
    "math", "history", "music", "biology", "geography", "chemistry", "physics", "art",
    "literature", "economics", "astronomy", "philosophy", "a new language", "programming",
    "statistics", "geology", "botany", "architecture", "poetry", "ecology",
]

# Made-up countries and capitals: 50 facts a tiny model must memorise (a lookup task).
CAPITALS = [
    ("Veltoria", "Brennik"), ("Arundel", "Sorrow Bay"), ("Quessia", "Lumtar"),
    ("Dravonia", "Keltsk"), ("Ostrelia", "Vammen"), ("Borvania", "Tillis"),
    ("Calderra", "Munro"), ("Estmark", "Halvik"), ("Fennoria", "Pask"), ("Gallendor", "Rimbe"),
    ("Hestia", "Corvane"), ("Istrova", "Belgan"), ("Jorvik", "Tessaly"), ("Kaldera", "Omsk Vale"),
    ("Lurania", "Dessen"), ("Morvath", "Ulmar"), ("Nerevia", "Castell"), ("Orlanth", "Pyrmont"),
    ("Pallisa", "Grenwick"), ("Quorin", "Seldom"), ("Rhovania", "Akkar"), ("Sarnia", "Velden"),
    ("Tolvaria", "Brisk"), ("Umbria Nova", "Fallow"), ("Varnholm", "Edris"),
    ("Westmarch", "Nolle"), ("Xandria", "Pell"), ("Yarrow", "Distan"), ("Zembla", "Korr"),
    ("Altmark", "Sivvel"), ("Brevonia", "Harlan"), ("Cassary", "Tumbel"), ("Delmora", "Quill"),
    ("Eskaria", "Rovan"), ("Frostmere", "Aldin"), ("Glimmora", "Sabel"), ("Halvoria", "Trent"),
    ("Ivessa", "Morrow"), ("Juniper Isles", "Coral Port"), ("Kestrel", "Wend"),
    ("Lorvenia", "Gast"), ("Mistral", "Orvo"), ("Norland", "Bexley"), ("Ophira", "Tarn"),
    ("Pendara", "Luss"), ("Ravenna Sur", "Ebbe"), ("Solmara", "Kivik"), ("Tarvos", "Menlo"),
    ("Ulvania", "Prisk"), ("Vorland", "Cadence"),
]

# Names for generated Python functions and their arguments.
VAR_PAIRS = [
    ("a", "b"), ("x", "y"), ("m", "n"), ("p", "q"), ("first", "second"), ("left", "right"),
    ("num1", "num2"), ("u", "v"), ("i", "j"), ("lo", "hi"), ("base", "other"), ("k", "w"),
]
