"""The built-in corpus the tiny Qwen3.5 tokenizer is trained on (make_qwen3_5.py).

Short product-shop sentences in the languages the prompts name, so that byte-level merges form
across scripts (accented Latin, Cyrillic, Greek, CJK), plus the prompt templates of
src/model/qwen3_5/prompts.json (read at build time and weighted up, so the words of every prompt
become few tokens). Changing this text changes the committed tiny model: rebuild it.
"""
from __future__ import annotations

import json
from pathlib import Path

PROMPTS_JSON = Path(__file__).resolve().parents[2] / "src/model/qwen3_5/prompts.json"

PRODUCT_LINES = """\
A white ceramic coffee mug with a curved handle stands on a wooden kitchen table.
This stainless steel water bottle keeps drinks cold for twenty four hours.
The leather handbag has a gold zipper, two inner pockets and an adjustable shoulder strap.
A pair of blue running shoes with white laces and a soft cushioned sole.
The wooden chair is painted black and has a woven seat.
A red cotton t-shirt folded neatly on a light grey background.
Close-up of a silver wristwatch with a round face and a brown leather band.
The desk lamp has a flexible neck, a matte finish and a warm LED light.
A green ceramic plant pot holds a small succulent with thick leaves.
The backpack is made of durable canvas with a padded laptop sleeve.
A soft wool blanket in beige and cream stripes is draped over a sofa.
Black wireless headphones rest on a white desk beside a notebook.
Handmade organic soap with lavender, natural ingredients, 100 g.
Premium quality, free shipping, easy returns within 30 days.
Size: M; colour: navy blue; material: 100% cotton; care: machine wash at 30 °C.
Ein weißer Keramikbecher mit geschwungenem Henkel steht auf einem Holztisch.
Diese Trinkflasche aus Edelstahl hält Getränke vierundzwanzig Stunden lang kalt.
Die Ledertasche hat einen goldenen Reißverschluss und zwei Innenfächer.
Ein Paar blaue Laufschuhe mit weißen Schnürsenkeln und weicher Sohle.
Größe: M; Farbe: Dunkelblau; Material: Baumwolle; Pflege: Maschinenwäsche bei 30 °C.
Hochwertige Qualität, schnelle Lieferung, kostenloser Versand und Rückgabe.
Natürliche Seife für empfindliche Haut, handgemacht in Deutschland.
Une tasse en céramique blanche avec une anse courbée est posée sur une table en bois.
Cette gourde en acier inoxydable garde les boissons fraîches pendant vingt-quatre heures.
Le sac à main en cuir possède une fermeture éclair dorée et deux poches intérieures.
Une paire de chaussures de course bleues avec des lacets blancs et une semelle souple.
Taille : M ; couleur : bleu marine ; matière : coton ; entretien : lavage en machine à 30 °C.
Qualité supérieure, livraison gratuite, retours faciles sous trente jours.
Savon naturel fait à la main, élégant et léger, idéal pour un cadeau.
Una taza de cerámica blanca con asa curvada está sobre una mesa de madera.
Esta botella de acero inoxidable mantiene las bebidas frías durante veinticuatro horas.
El bolso de piel tiene una cremallera dorada y dos bolsillos interiores.
Un par de zapatillas azules para correr con cordones blancos y suela suave.
Talla: M; color: azul marino; material: algodón; cuidado: lavado a máquina a 30 °C.
Calidad superior, envío gratis y devolución fácil en treinta días.
Jabón artesanal con aceite de oliva, diseño moderno y elegante.
Una tazza in ceramica bianca con manico curvo è appoggiata su un tavolo di legno.
Questa borraccia in acciaio inossidabile mantiene le bevande fredde per ventiquattro ore.
La borsa in pelle ha una cerniera dorata e due tasche interne.
Taglia: M; colore: blu scuro; materiale: cotone; lavaggio in lavatrice a 30 °C.
Qualità eccellente, spedizione gratuita e reso facile entro trenta giorni.
Een witte keramische mok met een gebogen handvat staat op een houten tafel.
Deze roestvrijstalen drinkfles houdt dranken vierentwintig uur koud.
De leren handtas heeft een gouden rits en twee binnenvakken.
Maat: M; kleur: donkerblauw; materiaal: katoen; wassen op 30 °C.
Hoge kwaliteit, gratis verzending en eenvoudig retourneren.
Biały ceramiczny kubek z zakrzywionym uchem stoi na drewnianym stole.
Ta butelka ze stali nierdzewnej utrzymuje napoje zimne przez dwadzieścia cztery godziny.
Skórzana torebka ma złoty zamek błyskawiczny i dwie wewnętrzne kieszenie.
Para niebieskich butów do biegania z białymi sznurówkami i miękką podeszwą.
Rozmiar: M; kolor: granatowy; materiał: bawełna; pranie w pralce w 30 °C.
Wysoka jakość, szybka dostawa, darmowa wysyłka i łatwy zwrot.
Naturalne mydło ręcznie robione, delikatne dla skóry, żółte i pachnące.
Белая керамическая кружка с изогнутой ручкой стоит на деревянном столе.
Эта бутылка из нержавеющей стали сохраняет напитки холодными двадцать четыре часа.
Кожаная сумка имеет золотую молнию и два внутренних кармана.
Пара синих кроссовок с белыми шнурками и мягкой подошвой.
Размер: M; цвет: тёмно-синий; материал: хлопок; стирка при 30 °C.
Высокое качество, быстрая доставка и бесплатный возврат.
Натуральное мыло ручной работы для чувствительной кожи.
Біла керамічна чашка з вигнутою ручкою стоїть на дерев'яному столі.
Ця пляшка з нержавіючої сталі зберігає напої холодними двадцять чотири години.
Висока якість, швидка доставка і безкоштовне повернення.
Натуральне мило ручної роботи, м'яке та ніжне для шкіри.
Μια λευκή κεραμική κούπα με καμπύλο χερούλι βρίσκεται σε ξύλινο τραπέζι.
Αυτό το μπουκάλι από ανοξείδωτο ατσάλι κρατά τα ποτά κρύα για είκοσι τέσσερις ώρες.
Η δερμάτινη τσάντα έχει χρυσό φερμουάρ και δύο εσωτερικές τσέπες.
Υψηλή ποιότητα, γρήγορη παράδοση και δωρεάν επιστροφή.
Φυσικό σαπούνι χειροποίητο, απαλό για το δέρμα.
木製のテーブルの上に、曲がった取っ手の白い陶器のマグカップがあります。
このステンレス製の水筒は飲み物を二十四時間冷たく保ちます。
革のハンドバッグには金色のファスナーと内ポケットが二つあります。
白い靴ひもと柔らかい靴底の青いランニングシューズです。
サイズ：M、色：ネイビー、素材：綿、お手入れ：洗濯機で洗えます。
高品質、送料無料、三十日以内の返品が簡単です。
天然素材の手作り石けん、肌にやさしい商品です。
商品の説明、代替テキスト、キーワード、タイトルを日本語で書きます。
一个带弯曲把手的白色陶瓷杯放在木桌上。
这个不锈钢水瓶可以让饮料保持冰凉二十四小时。
这款皮革手提包有金色拉链和两个内袋。
一双蓝色跑鞋，配白色鞋带和柔软的鞋底。
尺码：M；颜色：藏青色；材质：棉；洗涤：可机洗。
高品质，快速发货，免费送货，轻松退货。
天然手工皂，适合敏感肌肤，是很好的礼物。
产品描述、替代文本、关键词和标题，用中文写。
Uma caneca de cerâmica branca com alça curva está sobre uma mesa de madeira.
Alta qualidade, entrega rápida e devolução grátis.
En vit keramikmugg med böjt handtag står på ett träbord.
Hög kvalitet, snabb leverans och fri retur.
Et hvidt keramikkrus med buet hank står på et træbord.
Høj kvalitet, hurtig levering og gratis returnering.
Et hvitt keramikkrus med buet hank står på et trebord.
Valkoinen keraaminen muki, jossa on kaareva kahva, on puupöydällä.
Korkea laatu, nopea toimitus ja ilmainen palautus.
Bílý keramický hrnek se zahnutým uchem stojí na dřevěném stole.
Vysoká kvalita, rychlé dodání a vrácení zdarma.
Kavisli kulplu beyaz seramik bir kupa ahşap bir masanın üzerinde duruyor.
Yüksek kalite, hızlı teslimat ve ücretsiz iade.
곡선 손잡이가 있는 흰색 세라믹 머그잔이 나무 테이블 위에 있습니다.
고품질, 빠른 배송, 무료 반품.
"""


def prompt_lines() -> list[str]:
    """Every template line of prompts.json with placeholders filled by typical values, plus the
    language names, so the prompt frame tokenises into few tokens."""
    spec = json.loads(PROMPTS_JSON.read_text())
    lines = [spec["system"]]
    values = {"max_chars": "125", "max_words": "80", "count": "8", "answer": "the description"}
    for code, name in spec["languages"].items():
        values_l = {**values, "language": code, "language_name": name}
        for out in spec["outputs"].values():
            line = out["instruction"]
            for k, v in values_l.items():
                line = line.replace("{" + k + "}", v)
            lines.append(line)
    for out in spec["outputs"].values():
        if "length" in out:
            lines.append(out["length"].replace("{max_words}", "80"))
        lines.append(spec["closing"].replace("{answer}", out["answer"]))
    for template in spec["context"].values():
        lines.append(template.replace("{value}", "x"))
    return lines


def corpus() -> list[str]:
    """The training lines, in a fixed order. The prompt frame is repeated so its words merge
    first; the chat frame's role names and blank lines are included as text."""
    frame = ["system\n", "user\n", "assistant\n", "\n\n", ".\n"]
    lines = PRODUCT_LINES.splitlines()
    return lines + prompt_lines() * 6 + frame * 20
