"""ODinW-13 and ODinW-35: class names and annotation files of each dataset.

Generated from GLIP's configs (microsoft/GLIP@9dda9558 configs/odinw_13/*.yaml and
configs/odinw_35/*.yaml: DATASETS.OVERRIDE_CATEGORY and the registered ann_file paths; MIT licence).
Class ``k`` of a dataset is category id ``k + 1`` of its annotation file. ``ann`` paths are relative
to ``$FIBER_DATASETS/odinw``; each split's images lie in the folder of its annotation file.

Two datasets name their classes differently in the two benchmarks (CottontailRabbits,
NorthAmericaMushrooms), which is why ODinW-13 and ODinW-35 are registered under separate names.
"""

ODINW_35 = {
    "AerialMaritimeDrone_large": {
        "glip_key": "AerialMaritimeDrone_large",
        "ann": {
            "train": "AerialMaritimeDrone/large/train/annotations_without_background.json",
            "val": "AerialMaritimeDrone/large/valid/annotations_without_background.json",
            "test": "AerialMaritimeDrone/large/test/annotations_without_background.json",
        },
        "classes": ["boat", "car", "dock", "jetski", "lift"],
    },
    "AerialMaritimeDrone_tiled": {
        "glip_key": "AerialMaritimeDrone_tiled",
        "ann": {
            "train": "AerialMaritimeDrone/tiled/train/annotations_without_background.json",
            "val": "AerialMaritimeDrone/tiled/valid/annotations_without_background.json",
            "test": "AerialMaritimeDrone/tiled/test/annotations_without_background.json",
        },
        "classes": ["boat", "car", "dock", "jetski", "lift"],
    },
    "AmericanSignLanguageLetters": {
        "glip_key": "AmericanSignLanguageLetters_American_Sign_Language_Letters.v1-v1.coco",
        "ann": {
            "train": "AmericanSignLanguageLetters/American Sign Language Letters.v1-v1.coco/train/annotations_without_background.json",
            "val": "AmericanSignLanguageLetters/American Sign Language Letters.v1-v1.coco/valid/annotations_without_background.json",
            "test": "AmericanSignLanguageLetters/American Sign Language Letters.v1-v1.coco/test/annotations_without_background.json",
        },
        "classes": [
            "A", "B", "C", "D", "E", "F", "G", "H", "I", "J", "K", "L", "M", "N", "O", "P", "Q", "R", "S",
            "T", "U", "V", "W", "X", "Y", "Z",
        ],
    },
    "Aquarium": {
        "glip_key": "Aquarium_Aquarium_Combined.v2-raw-1024.coco",
        "ann": {
            "train": "Aquarium/Aquarium Combined.v2-raw-1024.coco/train/annotations_without_background.json",
            "val": "Aquarium/Aquarium Combined.v2-raw-1024.coco/valid/annotations_without_background.json",
            "test": "Aquarium/Aquarium Combined.v2-raw-1024.coco/test/annotations_without_background.json",
        },
        "classes": ["fish", "jellyfish", "penguin", "puffin", "shark", "starfish", "stingray"],
    },
    "BCCD": {
        "glip_key": "BCCD_BCCD.v3-raw.coco",
        "ann": {
            "train": "BCCD/BCCD.v3-raw.coco/train/annotations_without_background.json",
            "val": "BCCD/BCCD.v3-raw.coco/valid/annotations_without_background.json",
            "test": "BCCD/BCCD.v3-raw.coco/test/annotations_without_background.json",
        },
        "classes": ["Platelets", "RBC", "WBC"],
    },
    "ChessPieces": {
        "glip_key": "ChessPieces_Chess_Pieces.v23-raw.coco",
        "ann": {
            "train": "ChessPieces/Chess Pieces.v23-raw.coco/train/annotations_without_background.json",
            "val": "ChessPieces/Chess Pieces.v23-raw.coco/valid/annotations_without_background.json",
            "test": "ChessPieces/Chess Pieces.v23-raw.coco/test/annotations_without_background.json",
        },
        "classes": [
            "  ", "black bishop", "black king", "black knight", "black pawn", "black queen", "black rook",
            "white bishop", "white king", "white knight", "white pawn", "white queen", "white rook",
        ],
    },
    "CottontailRabbits": {
        "glip_key": "CottontailRabbits",
        "ann": {
            "train": "CottontailRabbits/train/annotations_without_background.json",
            "val": "CottontailRabbits/valid/annotations_without_background.json",
            "test": "CottontailRabbits/test/annotations_without_background.json",
        },
        "classes": ["rabbit"],
    },
    "DroneControl": {
        "glip_key": "DroneControl_Drone_Control.v3-raw.coco",
        "ann": {
            "train": "DroneControl/Drone Control.v3-raw.coco/train/annotations_without_background.json",
            "val": "DroneControl/Drone Control.v3-raw.coco/valid/annotations_without_background.json",
            "test": "DroneControl/Drone Control.v3-raw.coco/test/annotations_without_background.json",
        },
        "classes": [
            "follow", "follow_hand", "land", "land_hand", "null", "object", "takeoff", "takeoff-hand",
        ],
    },
    "EgoHands_generic": {
        "glip_key": "EgoHands_generic",
        "ann": {
            "train": "EgoHands/generic/train/annotations_without_background.json",
            "val": "EgoHands/generic/valid/annotations_without_background.json",
            "test": "EgoHands/generic/test/annotations_without_background.json",
        },
        "classes": ["hand"],
    },
    "EgoHands_specific": {
        "glip_key": "EgoHands_specific",
        "ann": {
            "train": "EgoHands/specific/train/annotations_without_background.json",
            "val": "EgoHands/specific/valid/annotations_without_background.json",
            "test": "EgoHands/specific/test/annotations_without_background.json",
        },
        "classes": ["myleft", "myright", "yourleft", "yourright"],
    },
    "HardHatWorkers": {
        "glip_key": "HardHatWorkers_raw",
        "ann": {
            "train": "HardHatWorkers/raw/train/annotations_without_background.json",
            "val": "HardHatWorkers/raw/valid/annotations_without_background.json",
            "test": "HardHatWorkers/raw/test/annotations_without_background.json",
        },
        "classes": ["head", "helmet", "person"],
    },
    "MaskWearing": {
        "glip_key": "MaskWearing_raw",
        "ann": {
            "train": "MaskWearing/raw/train/annotations_without_background.json",
            "val": "MaskWearing/raw/valid/annotations_without_background.json",
            "test": "MaskWearing/raw/test/annotations_without_background.json",
        },
        "classes": ["mask", "no-mask"],
    },
    "MountainDewCommercial": {
        "glip_key": "MountainDewCommercial",
        "ann": {
            "train": "MountainDewCommercial/train/annotations_without_background.json",
            "val": "MountainDewCommercial/valid/annotations_without_background.json",
            "test": "MountainDewCommercial/test/annotations_without_background.json",
        },
        "classes": ["bottle"],
    },
    "NorthAmericaMushrooms": {
        "glip_key": "NorthAmericaMushrooms_North_American_Mushrooms.v1-416x416.coco",
        "ann": {
            "train": "NorthAmericaMushrooms/North American Mushrooms.v1-416x416.coco/train/annotations_without_background.json",
            "val": "NorthAmericaMushrooms/North American Mushrooms.v1-416x416.coco/valid/annotations_without_background.json",
            "test": "NorthAmericaMushrooms/North American Mushrooms.v1-416x416.coco/test/annotations_without_background.json",
        },
        "classes": ["flat mushroom", "yellow mushroom"],
    },
    "OxfordPets_by-breed": {
        "glip_key": "OxfordPets_by-breed",
        "ann": {
            "train": "OxfordPets/by-breed/train/annotations_without_background.json",
            "val": "OxfordPets/by-breed/valid/annotations_without_background.json",
            "test": "OxfordPets/by-breed/test/annotations_without_background.json",
        },
        "classes": [
            "cat-Abyssinian", "cat-Bengal", "cat-Birman", "cat-Bombay", "cat-British_Shorthair",
            "cat-Egyptian_Mau", "cat-Maine_Coon", "cat-Persian", "cat-Ragdoll", "cat-Russian_Blue",
            "cat-Siamese", "cat-Sphynx", "dog-american_bulldog", "dog-american_pit_bull_terrier",
            "dog-basset_hound", "dog-beagle", "dog-boxer", "dog-chihuahua", "dog-english_cocker_spaniel",
            "dog-english_setter", "dog-german_shorthaired", "dog-great_pyrenees", "dog-havanese",
            "dog-japanese_chin", "dog-keeshond", "dog-leonberger", "dog-miniature_pinscher",
            "dog-newfoundland", "dog-pomeranian", "dog-pug", "dog-saint_bernard", "dog-samoyed",
            "dog-scottish_terrier", "dog-shiba_inu", "dog-staffordshire_bull_terrier", "dog-wheaten_terrier",
            "dog-yorkshire_terrier",
        ],
    },
    "OxfordPets_by-species": {
        "glip_key": "OxfordPets_by-species",
        "ann": {
            "train": "OxfordPets/by-species/train/annotations_without_background.json",
            "val": "OxfordPets/by-species/valid/annotations_without_background.json",
            "test": "OxfordPets/by-species/test/annotations_without_background.json",
        },
        "classes": ["cat", "dog"],
    },
    "PKLot": {
        "glip_key": "PKLot_640",
        "ann": {
            "train": "PKLot/640/train/annotations_without_background.json",
            "val": "PKLot/640/valid/annotations_without_background.json",
            "test": "PKLot/640/test/annotations_without_background.json",
        },
        "classes": ["space-empty", "space-occupied"],
    },
    "Packages": {
        "glip_key": "Packages_Raw",
        "ann": {
            "train": "Packages/Raw/train/annotations_without_background.json",
            "val": "Packages/Raw/valid/annotations_without_background.json",
            "test": "Packages/Raw/test/annotations_without_background.json",
        },
        "classes": ["package"],
    },
    "PascalVOC": {
        "glip_key": "PascalVOC",
        "ann": {
            "train": "PascalVOC/train/annotations_without_background.json",
            "val": "PascalVOC/valid/annotations_without_background.json",
            "test": "PascalVOC/valid/annotations_without_background.json",
        },
        "classes": [
            "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
            "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
            "tvmonitor",
        ],
    },
    "Raccoon": {
        "glip_key": "Raccoon_Raccoon.v2-raw.coco",
        "ann": {
            "train": "Raccoon/Raccoon.v2-raw.coco/train/annotations_without_background.json",
            "val": "Raccoon/Raccoon.v2-raw.coco/valid/annotations_without_background.json",
            "test": "Raccoon/Raccoon.v2-raw.coco/test/annotations_without_background.json",
        },
        "classes": ["raccoon"],
    },
    "ShellfishOpenImages": {
        "glip_key": "ShellfishOpenImages_raw",
        "ann": {
            "train": "ShellfishOpenImages/raw/train/annotations_without_background.json",
            "val": "ShellfishOpenImages/raw/valid/annotations_without_background.json",
            "test": "ShellfishOpenImages/raw/test/annotations_without_background.json",
        },
        "classes": ["Crab", "Lobster", "Shrimp"],
    },
    "ThermalCheetah": {
        "glip_key": "ThermalCheetah",
        "ann": {
            "train": "ThermalCheetah/train/annotations_without_background.json",
            "val": "ThermalCheetah/valid/annotations_without_background.json",
            "test": "ThermalCheetah/test/annotations_without_background.json",
        },
        "classes": ["cheetah", "human"],
    },
    "UnoCards": {
        "glip_key": "UnoCards_raw",
        "ann": {
            "train": "UnoCards/raw/train/annotations_without_background.json",
            "val": "UnoCards/raw/valid/annotations_without_background.json",
            "test": "UnoCards/raw/test/annotations_without_background.json",
        },
        "classes": ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14"],
    },
    "VehiclesOpenImages": {
        "glip_key": "VehiclesOpenImages_416x416",
        "ann": {
            "train": "VehiclesOpenImages/416x416/train/annotations_without_background.json",
            "val": "VehiclesOpenImages/416x416/valid/annotations_without_background.json",
            "test": "VehiclesOpenImages/416x416/test/annotations_without_background.json",
        },
        "classes": ["Ambulance", "Bus", "Car", "Motorcycle", "Truck"],
    },
    "WildfireSmoke": {
        "glip_key": "WildfireSmoke",
        "ann": {
            "train": "WildfireSmoke/train/annotations_without_background.json",
            "val": "WildfireSmoke/valid/annotations_without_background.json",
            "test": "WildfireSmoke/test/annotations_without_background.json",
        },
        "classes": ["smoke"],
    },
    "boggleBoards": {
        "glip_key": "boggleBoards_416x416AutoOrient_export_",
        "ann": {
            "train": "boggleBoards/416x416AutoOrient/export/train_annotations_without_background.json",
            "val": "boggleBoards/416x416AutoOrient/export/val_annotations_without_background.json",
            "test": "boggleBoards/416x416AutoOrient/export/test_annotations_without_background.json",
        },
        "classes": [
            "Q", "a", "an", "b", "c", "d", "e", "er", "f", "g", "h", "he", "i", "in", "j", "k", "l", "m", "n",
            "o", "o ", "p", "q", "qu", "r", "s", "t", "t\\", "th", "u", "v", "w", "wild", "x", "y", "z",
        ],
    },
    "brackishUnderwater": {
        "glip_key": "brackishUnderwater_960x540",
        "ann": {
            "train": "brackishUnderwater/960x540/train/annotations_without_background.json",
            "val": "brackishUnderwater/960x540/valid/annotations_without_background.json",
            "test": "brackishUnderwater/960x540/test/annotations_without_background.json",
        },
        "classes": ["crab", "fish", "jellyfish", "shrimp", "small_fish", "starfish"],
    },
    "dice": {
        "glip_key": "dice_mediumColor_export",
        "ann": {
            "train": "dice/mediumColor/export/train_annotations_without_background.json",
            "val": "dice/mediumColor/export/val_annotations_without_background.json",
            "test": "dice/mediumColor/export/test_annotations_without_background.json",
        },
        "classes": ["1", "2", "3", "4", "5", "6"],
    },
    "openPoetryVision": {
        "glip_key": "openPoetryVision_512x512",
        "ann": {
            "train": "openPoetryVision/512x512/train/annotations_without_background.json",
            "val": "openPoetryVision/512x512/valid/annotations_without_background.json",
            "test": "openPoetryVision/512x512/test/annotations_without_background.json",
        },
        "classes": [
            "American Typewriter", "Andale Mono", "Apple Chancery", "Arial", "Avenir", "Baskerville",
            "Big Caslon", "Bradley Hand", "Brush Script MT", "Chalkboard", "Comic Sans MS", "Copperplate",
            "Courier", "Didot", "Futura", "Geneva", "Georgia", "Gill Sans", "Helvetica", "Herculanum",
            "Impact", "Kefa", "Lucida Grande", "Luminari", "Marker Felt", "Menlo", "Monaco", "Noteworthy",
            "Optima", "PT Sans", "PT Serif", "Palatino", "Papyrus", "Phosphate", "Rockwell", "SF Pro",
            "SignPainter", "Skia", "Snell Roundhand", "Tahoma", "Times New Roman", "Trebuchet MS", "Verdana",
        ],
    },
    "pistols": {
        "glip_key": "pistols_export",
        "ann": {
            "train": "pistols/export/train_annotations_without_background.json",
            "val": "pistols/export/val_annotations_without_background.json",
            "test": "pistols/export/test_annotations_without_background.json",
        },
        "classes": ["pistol"],
    },
    "plantdoc_100x100": {
        "glip_key": "plantdoc_100x100",
        "ann": {
            "train": "plantdoc/100x100/train/annotations_without_background.json",
            "val": "plantdoc/100x100/valid/annotations_without_background.json",
            "test": "plantdoc/100x100/test/annotations_without_background.json",
        },
        "classes": [
            "Apple Scab Leaf", "Apple leaf", "Apple rust leaf", "Bell_pepper leaf", "Bell_pepper leaf spot",
            "Blueberry leaf", "Cherry leaf", "Corn Gray leaf spot", "Corn leaf blight", "Corn rust leaf",
            "Peach leaf", "Potato leaf", "Potato leaf early blight", "Potato leaf late blight",
            "Raspberry leaf", "Soyabean leaf", "Soybean leaf", "Squash Powdery mildew leaf",
            "Strawberry leaf", "Tomato Early blight leaf", "Tomato Septoria leaf spot", "Tomato leaf",
            "Tomato leaf bacterial spot", "Tomato leaf late blight", "Tomato leaf mosaic virus",
            "Tomato leaf yellow virus", "Tomato mold leaf", "Tomato two spotted spider mites leaf",
            "grape leaf", "grape leaf black rot",
        ],
    },
    "plantdoc_416x416": {
        "glip_key": "plantdoc_416x416",
        "ann": {
            "train": "plantdoc/416x416/train/annotations_without_background.json",
            "val": "plantdoc/416x416/valid/annotations_without_background.json",
            "test": "plantdoc/416x416/test/annotations_without_background.json",
        },
        "classes": [
            "Apple Scab Leaf", "Apple leaf", "Apple rust leaf", "Bell_pepper leaf", "Bell_pepper leaf spot",
            "Blueberry leaf", "Cherry leaf", "Corn Gray leaf spot", "Corn leaf blight", "Corn rust leaf",
            "Peach leaf", "Potato leaf", "Potato leaf early blight", "Potato leaf late blight",
            "Raspberry leaf", "Soyabean leaf", "Soybean leaf", "Squash Powdery mildew leaf",
            "Strawberry leaf", "Tomato Early blight leaf", "Tomato Septoria leaf spot", "Tomato leaf",
            "Tomato leaf bacterial spot", "Tomato leaf late blight", "Tomato leaf mosaic virus",
            "Tomato leaf yellow virus", "Tomato mold leaf", "Tomato two spotted spider mites leaf",
            "grape leaf", "grape leaf black rot",
        ],
    },
    "pothole": {
        "glip_key": "pothole",
        "ann": {
            "train": "pothole/train/annotations_without_background.json",
            "val": "pothole/valid/annotations_without_background.json",
            "test": "pothole/test/annotations_without_background.json",
        },
        "classes": ["pothole"],
    },
    "selfdrivingCar": {
        "glip_key": "selfdrivingCar_fixedLarge_export_",
        "ann": {
            "train": "selfdrivingCar/fixedLarge/export/train_annotations_without_background.json",
            "val": "selfdrivingCar/fixedLarge/export/val_annotations_without_background.json",
            "test": "selfdrivingCar/fixedLarge/export/test_annotations_without_background.json",
        },
        "classes": [
            "biker", "car", "pedestrian", "trafficLight", "trafficLight-Green", "trafficLight-GreenLeft",
            "trafficLight-Red", "trafficLight-RedLeft", "trafficLight-Yellow", "trafficLight-YellowLeft",
            "truck",
        ],
    },
    "thermalDogsAndPeople": {
        "glip_key": "thermalDogsAndPeople",
        "ann": {
            "train": "thermalDogsAndPeople/train/annotations_without_background.json",
            "val": "thermalDogsAndPeople/valid/annotations_without_background.json",
            "test": "thermalDogsAndPeople/test/annotations_without_background.json",
        },
        "classes": ["dog", "person"],
    },
    "websiteScreenshots": {
        "glip_key": "websiteScreenshots",
        "ann": {
            "train": "websiteScreenshots/train/annotations_without_background.json",
            "val": "websiteScreenshots/valid/annotations_without_background.json",
            "test": "websiteScreenshots/test/annotations_without_background.json",
        },
        "classes": ["button", "field", "heading", "iframe", "image", "label", "link", "text"],
    },
}

# The 35 datasets of the ODinW-35 benchmark (ODINW_35 also holds plantdoc_100x100, which it leaves out).
# ODinW-13 is a subset of ODinW-35 with the same files; only two datasets name their classes
# differently there.
ODINW_13_CLASS_OVERRIDES = {
    "CottontailRabbits": ["Cottontail-Rabbit"],
    "NorthAmericaMushrooms": ["CoW", "chanterelle"],
}
ODINW_13 = {
    name: {**ODINW_35[name], "classes": ODINW_13_CLASS_OVERRIDES.get(name, ODINW_35[name]["classes"])}
    for name in (
        "AerialMaritimeDrone_large", "Aquarium", "CottontailRabbits", "EgoHands_generic", "NorthAmericaMushrooms",
        "Packages", "PascalVOC", "Raccoon", "ShellfishOpenImages", "VehiclesOpenImages", "pistols", "pothole",
        "thermalDogsAndPeople",
    )
}

ODINW_35_OFFICIAL = [
    "AerialMaritimeDrone_large",
    "AerialMaritimeDrone_tiled",
    "AmericanSignLanguageLetters",
    "Aquarium",
    "BCCD",
    "ChessPieces",
    "CottontailRabbits",
    "DroneControl",
    "EgoHands_generic",
    "EgoHands_specific",
    "HardHatWorkers",
    "MaskWearing",
    "MountainDewCommercial",
    "NorthAmericaMushrooms",
    "OxfordPets_by-breed",
    "OxfordPets_by-species",
    "PKLot",
    "Packages",
    "PascalVOC",
    "Raccoon",
    "ShellfishOpenImages",
    "ThermalCheetah",
    "UnoCards",
    "VehiclesOpenImages",
    "WildfireSmoke",
    "boggleBoards",
    "brackishUnderwater",
    "dice",
    "openPoetryVision",
    "pistols",
    "plantdoc_416x416",
    "pothole",
    "selfdrivingCar",
    "thermalDogsAndPeople",
    "websiteScreenshots",
]
